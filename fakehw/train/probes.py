"""What a model probe measures on held-out tokens: the output distribution and the
hidden states of the probed layers (first, middle, last).

Nothing here is a number typed in for a figure: each comes from a small model of the
network's outputs, fitted to the loss the run measured.

**Output distribution.** At each probed position the model predicts a Zipf-Mandelbrot
distribution over the vocabulary (``p_r`` proportional to ``(r + q)^-s``, rank ``r``), with a
sharpness ``s`` that varies from position to position (lognormal: some tokens are easy,
most are not). The token that comes is drawn from the data's own distribution, of
sharpness ``s``; the model may be overconfident (fine-tuning makes it so), predicting
``s * (1 + overconfidence)``. The positions' centre sharpness is solved for so that
their mean cross-entropy is the measured loss; entropy, accuracies, the top-two margin,
the top-k mass and the true token's mean probability then follow exactly from the
distributions. So entropy <= ln(vocab), top-5 >= top-1, and ``p_true_mean`` >=
``exp(-loss)`` (Jensen) come from the arithmetic, not from rules.

**Hidden states.** A token's hidden state is a shared direction (anisotropy, ``a``), its
sequence's direction (context, ``b``) and its own part, whose covariance spectrum falls
as a power law ``k^-alpha`` over the hidden dimensions. Cosine similarity within a
sequence is then ``(a^2+b^2)/(a^2+b^2+c^2)``, across sequences ``a^2/(...)``, and the
participation ratio ``(sum lambda)^2 / sum lambda^2`` of the covariance lies in
(1, hidden). Training grows the anisotropy of the upper layers and the context of the
middle ones, and concentrates the spectrum (Ethayarajh 2019; the intrinsic-dimension
studies of LLM layers).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from fakehw.train.catalog import Architecture
from fakehw.train.events import LayerProbe, ProbeResult

TOP_K_MASS = 10  # topk_mass: the probability the top 10 predictions hold
# Zipf-Mandelbrot: p_r proportional to (r + q)^-s. The offset flattens the head (a few
# candidates near-tied, as LMs predict), which puts top-1 accuracy where real models
# have it: ~40 % at 3.3 nats on web text, ~72 % at 1.0 on chat data (TRL's
# mean_token_accuracy).
MANDELBROT_OFFSET = 2.0
POSITION_SPREAD = 0.6  # lognormal spread of the sharpness over positions
QUADRATURE = 48  # positions stand for the probe's tokens (quantiles of the spread)
EXACT_RANKS = 256  # ranks summed one by one; the tail in log-spaced bins
TAIL_BINS = 256
SHARPNESS_STEP = 0.05
SHARPNESS_MAX = 16.0


@dataclass(frozen=True)
class RankGrid:
    """The vocabulary's ranks as sums run over them: the first one by one, the long
    tail in log-spaced bins (a bin's centre, weighted by the ranks it holds)."""

    log_ranks: tuple[float, ...]
    weights: tuple[float, ...]

    def log_z(self, sharpness: float) -> float:
        """ln of sum_r (r + q)^-s, the normaliser."""
        return math.log(
            sum(
                w * math.exp(-sharpness * lr)
                for w, lr in zip(self.weights, self.log_ranks, strict=True)
            )
        )


@lru_cache(maxsize=8)
def rank_grid(vocab: int) -> RankGrid:
    exact = min(vocab, EXACT_RANKS)
    log_ranks = [math.log(r + MANDELBROT_OFFSET) for r in range(1, exact + 1)]
    weights = [1.0] * exact
    if vocab > exact:
        edges = sorted({round((exact + 1) * ((vocab + 1) / (exact + 1)) ** (k / TAIL_BINS))
                        for k in range(TAIL_BINS + 1)})  # fmt: skip
        for low, high in itertools.pairwise(edges):
            weights.append(float(high - low))
            log_ranks.append(math.log((low + high - 1) / 2 + MANDELBROT_OFFSET))
    return RankGrid(tuple(log_ranks), tuple(weights))


@dataclass(frozen=True)
class ZipfTable:
    """Per sharpness of the grid (``SHARPNESS_STEP`` apart): what one position's
    distribution gives."""

    log_z: tuple[float, ...]
    mean_log_rank: tuple[float, ...]  # E_p[ln r]
    top1: tuple[float, ...]
    top2: tuple[float, ...]
    top5: tuple[float, ...]
    topk: tuple[float, ...]

    def at(self, column: tuple[float, ...], sharpness: float) -> float:
        """Linear interpolation of a column at ``sharpness``."""
        x = min(max(sharpness, 0.0), SHARPNESS_MAX) / SHARPNESS_STEP
        i = min(int(x), len(column) - 2)
        return column[i] + (x - i) * (column[i + 1] - column[i])


@lru_cache(maxsize=8)
def zipf_table(vocab: int) -> ZipfTable:
    grid = rank_grid(vocab)
    columns: dict[str, list[float]] = {k: [] for k in ("z", "m", "1", "2", "5", "k")}
    for i in range(round(SHARPNESS_MAX / SHARPNESS_STEP) + 1):
        s = i * SHARPNESS_STEP
        log_z = grid.log_z(s)
        probs = [
            w * math.exp(-s * lr - log_z)
            for w, lr in zip(grid.weights, grid.log_ranks, strict=True)
        ]
        columns["z"].append(log_z)
        columns["m"].append(sum(p * lr for p, lr in zip(probs, grid.log_ranks, strict=True)))
        columns["1"].append(probs[0])
        columns["2"].append(probs[1])
        columns["5"].append(sum(probs[:5]))
        columns["k"].append(sum(probs[:TOP_K_MASS]))
    return ZipfTable(*(tuple(columns[k]) for k in ("z", "m", "1", "2", "5", "k")))


@lru_cache(maxsize=1)
def _spread() -> tuple[float, ...]:
    """Each position's sharpness over the centre's: lognormal, at the quantiles of
    QUADRATURE equal shares."""
    normal = NormalDist()
    return tuple(
        math.exp(POSITION_SPREAD * normal.inv_cdf((k + 0.5) / QUADRATURE))
        for k in range(QUADRATURE)
    )


@dataclass(frozen=True)
class OutputStats:
    loss: float
    entropy: float
    top1_acc: float
    top5_acc: float
    confidence_gap: float
    topk_mass: float
    p_true_mean: float


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def output_stats(vocab: int, loss: float, overconfidence: float) -> OutputStats:
    """The output distribution's figures at a measured ``loss`` (nats per token)."""
    table = zipf_table(vocab)
    spread = _spread()
    factor = 1.0 + overconfidence

    def sharpness(centre: float) -> list[tuple[float, float]]:
        """(the data's, the model's) sharpness at each position."""
        pairs = []
        for k in spread:
            true_s = min(centre * k, SHARPNESS_MAX)
            pairs.append((true_s, min(true_s * factor, SHARPNESS_MAX)))
        return pairs

    def cross_entropy(centre: float) -> float:
        # -sum_r p_r ln q_r = s_q E_p[ln r] + ln Z(s_q)
        return _mean([
            model_s * table.at(table.mean_log_rank, true_s) + table.at(table.log_z, model_s)
            for true_s, model_s in sharpness(centre)
        ])  # fmt: skip

    loss = min(loss, math.log(vocab))
    low, high = 0.0, SHARPNESS_MAX / min(spread)
    for _ in range(50):  # the mean cross-entropy falls as the sharpness grows
        mid = (low + high) / 2
        if cross_entropy(mid) > loss:
            low = mid
        else:
            high = mid
    centre = (low + high) / 2
    positions = sharpness(centre)
    grid = rank_grid(vocab)
    p_true = []
    for true_s, model_s in positions:
        # E_p[q_true] = sum_r p_r q_r, over the rank grid
        offset = table.at(table.log_z, true_s) + table.at(table.log_z, model_s)
        p_true.append(sum(w * math.exp(-(true_s + model_s) * lr - offset)
                          for w, lr in zip(grid.weights, grid.log_ranks, strict=True)))  # fmt: skip
    return OutputStats(
        loss=cross_entropy(centre),
        entropy=_mean(
            [m * table.at(table.mean_log_rank, m) + table.at(table.log_z, m) for _, m in positions]
        ),
        top1_acc=_mean([table.at(table.top1, t) for t, _ in positions]),  # rank 1 of both
        top5_acc=_mean([table.at(table.top5, t) for t, _ in positions]),
        confidence_gap=_mean(
            [table.at(table.top1, m) - table.at(table.top2, m) for _, m in positions]
        ),
        topk_mass=_mean([table.at(table.topk, m) for _, m in positions]),
        p_true_mean=_mean(p_true),
    )


def layer_stats(hidden: int, depth: float, trained: float) -> tuple[float, float, float]:
    """(cosine within a sequence, cosine across sequences, participation ratio) of a
    layer at ``depth`` (0 first, 1 last) of a model ``trained`` (0 at initialisation,
    1 at its final loss)."""
    # anisotropy: a common direction every token shares, strongest in the last layers
    # (their massive activations), a little everywhere once trained
    shared = 0.04 + trained * (0.06 + 1.6 * depth**2)
    context = 0.05 + 0.35 * trained * (1.0 - abs(depth - 0.55))
    own = 1.0
    total = shared + context + own
    alpha = 0.25 + trained * (0.55 + 1.0 * depth**2)  # the spectrum concentrates
    decay = [k**-alpha for k in range(1, hidden + 1)]
    norm = sum(decay)
    spectrum = [own * d / norm + context / hidden for d in decay]
    participation = sum(spectrum) ** 2 / sum(v * v for v in spectrum)
    return (shared + context) / total, shared / total, participation


class ModelProbe:
    """The probe a run calls at low frequency (each validation): on a slice of the
    held-out batches, the output distribution and the first, middle and last layers."""

    def __init__(self, arch: Architecture, final_loss: float, rng: random.Random) -> None:
        self.arch = arch
        self.rng = rng
        self.final_loss = final_loss  # where its curve tends
        self.layers = sorted({0, arch.layers // 2, arch.layers - 1})

    def trained(self, loss: float) -> float:
        """How far the model has come: 0 at a fresh initialisation, 1 at a fully trained
        model's loss (a fine-tune starts from a trained base: near 1)."""
        ln_vocab = math.log(self.arch.vocab)
        reach = (ln_vocab - loss) / max(1e-9, ln_vocab - 0.9 * self.final_loss)
        return min(1.0, max(0.0, reach))

    def measure(self, step: int, loss: float, overconfidence: float, tokens: int,
                time: float, runtime_s: float) -> ProbeResult:  # fmt: skip
        """The probe of ``tokens`` held-out tokens whose mean loss was ``loss``."""
        out = output_stats(self.arch.vocab, loss, overconfidence)
        trained = self.trained(loss)
        noise = 1.0 / math.sqrt(max(1, tokens))
        layers = []
        last = max(1, self.arch.layers - 1)
        for index in self.layers:
            intra, inter, participation = layer_stats(self.arch.hidden, index / last, trained)
            jitter = 1 + 4 * noise * self.rng.gauss(0, 1)
            spread = 1 + 8 * noise * self.rng.gauss(0, 1)
            layers.append(LayerProbe(index, intra * jitter, inter * jitter, participation * spread))
        return ProbeResult(
            step=step,
            time=time,
            tokens=tokens,
            runtime_s=runtime_s,
            loss=out.loss,
            vocab=self.arch.vocab,
            hidden=self.arch.hidden,
            entropy=out.entropy,
            top1_acc=out.top1_acc,
            top5_acc=out.top5_acc,
            confidence_gap=out.confidence_gap,
            topk_mass=out.topk_mass,
            topk=TOP_K_MASS,
            p_true_mean=out.p_true_mean,
            layers=tuple(layers),
        )
