"""What a model probe measures on held-out tokens: the output distribution and the
hidden states of the probed layers (first, middle, last).

Nothing here is a number typed in for a figure: each comes from a small model of the
network's outputs, fitted to the loss the run measured.

**Output distribution.** At each probed position the model predicts a Zipf-shaped
distribution over the vocabulary (``p_r`` proportional to ``r^-s``, rank ``r``), with a
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

import math
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fakehw.train.catalog import Architecture
from fakehw.train.events import LayerProbe, ProbeResult

TOP_K_MASS = 10  # topk_mass: the probability the top 10 predictions hold
POSITION_SPREAD = 0.6  # lognormal spread of the sharpness over positions
QUADRATURE = 48  # positions stand for the probe's tokens (quantiles of the spread)
EXACT_RANKS = 2000  # ranks summed one by one; the tail in log-spaced bins
SHARPNESS_GRID = np.linspace(0.0, 16.0, 1601)


@dataclass(frozen=True)
class ZipfTable:
    """Per sharpness of the grid: what one position's distribution gives."""

    log_z: np.ndarray  # log of the normaliser
    mean_log_rank: np.ndarray  # E_p[ln r]
    top1: np.ndarray
    top2: np.ndarray
    top5: np.ndarray
    topk: np.ndarray
    ranks: np.ndarray  # the rank grid and its weights (for cross terms)
    weights: np.ndarray


@lru_cache(maxsize=8)
def zipf_table(vocab: int) -> ZipfTable:
    exact = np.arange(1, min(vocab, EXACT_RANKS) + 1, dtype=np.float64)
    ranks, weights = exact, np.ones_like(exact)
    if vocab > EXACT_RANKS:
        edges = np.unique(np.geomspace(EXACT_RANKS + 1, vocab + 1, 600).astype(np.int64))
        counts = np.diff(edges).astype(np.float64)
        centres = (edges[:-1] + edges[1:] - 1) / 2.0
        ranks = np.concatenate([exact, centres])
        weights = np.concatenate([weights, counts])
    log_r = np.log(ranks)
    s = SHARPNESS_GRID[:, None]
    log_terms = -s * log_r[None, :]
    peak = log_terms.max(axis=1, keepdims=True)
    mass = weights[None, :] * np.exp(log_terms - peak)
    z = mass.sum(axis=1)
    p = mass / z[:, None]
    log_z = np.log(z) + peak[:, 0]
    return ZipfTable(
        log_z=log_z,
        mean_log_rank=(p * log_r[None, :]).sum(axis=1),
        top1=p[:, 0],
        top2=p[:, 1],
        top5=p[:, :5].sum(axis=1),
        topk=p[:, :TOP_K_MASS].sum(axis=1),
        ranks=ranks,
        weights=weights,
    )


def _at(values: np.ndarray, sharpness: np.ndarray) -> np.ndarray:
    found: np.ndarray = np.interp(sharpness, SHARPNESS_GRID, values)
    return found


def _quantiles() -> np.ndarray:
    """Standard normal quantiles at the midpoints of QUADRATURE equal shares."""
    from statistics import NormalDist

    normal = NormalDist()
    return np.array([normal.inv_cdf((k + 0.5) / QUADRATURE) for k in range(QUADRATURE)])


@dataclass(frozen=True)
class OutputStats:
    loss: float
    entropy: float
    top1_acc: float
    top5_acc: float
    confidence_gap: float
    topk_mass: float
    p_true_mean: float


def output_stats(vocab: int, loss: float, overconfidence: float) -> OutputStats:
    """The output distribution's figures at a measured ``loss`` (nats per token)."""
    table = zipf_table(vocab)
    spread = np.exp(POSITION_SPREAD * _quantiles())
    factor = 1.0 + overconfidence

    def cross_entropy(centre: float) -> np.ndarray:
        true_s = np.clip(centre * spread, 0.0, SHARPNESS_GRID[-1])
        model_s = np.clip(true_s * factor, 0.0, SHARPNESS_GRID[-1])
        # -sum_r p_r ln q_r = s_q E_p[ln r] + ln Z(s_q)
        ce: np.ndarray = model_s * _at(table.mean_log_rank, true_s) + _at(table.log_z, model_s)
        return ce

    ln_vocab = math.log(vocab)
    loss = min(loss, ln_vocab)
    low, high = 0.0, SHARPNESS_GRID[-1] / spread.min()
    for _ in range(60):  # the mean cross-entropy falls as the sharpness grows
        mid = (low + high) / 2
        if float(cross_entropy(mid).mean()) > loss:
            low = mid
        else:
            high = mid
    centre = (low + high) / 2
    true_s = np.clip(centre * spread, 0.0, SHARPNESS_GRID[-1])
    model_s = np.clip(true_s * factor, 0.0, SHARPNESS_GRID[-1])
    entropy = model_s * _at(table.mean_log_rank, model_s) + _at(table.log_z, model_s)
    # E_p[q_true] = sum_r p_r q_r, over the rank grid
    log_r = np.log(table.ranks)
    log_p = -true_s[:, None] * log_r[None, :] - _at(table.log_z, true_s)[:, None]
    log_q = -model_s[:, None] * log_r[None, :] - _at(table.log_z, model_s)[:, None]
    p_true = (table.weights[None, :] * np.exp(log_p + log_q)).sum(axis=1)
    q1, q2 = _at(table.top1, model_s), _at(table.top2, model_s)
    return OutputStats(
        loss=float(cross_entropy(centre).mean()),
        entropy=float(entropy.mean()),
        top1_acc=float(_at(table.top1, true_s).mean()),  # the argmax is rank 1 of both
        top5_acc=float(_at(table.top5, true_s).mean()),
        confidence_gap=float((q1 - q2).mean()),
        topk_mass=float(_at(table.topk, model_s).mean()),
        p_true_mean=float(p_true.mean()),
    )


def layer_stats(hidden: int, depth: float, trained: float) -> tuple[float, float, float]:
    """(cosine within a sequence, cosine across sequences, participation ratio) of a
    layer at ``depth`` (0 first, 1 last) of a model ``trained`` (0 at initialisation,
    1 at its final loss)."""
    shared = 0.04 + 0.55 * trained * depth**1.5  # anisotropy: the upper layers'
    context = 0.05 + 0.35 * trained * (1.0 - abs(depth - 0.55))
    own = 1.0
    total = shared + context + own
    alpha = 0.25 + trained * (0.55 + 0.45 * depth)  # the spectrum concentrates
    k = np.arange(1, hidden + 1, dtype=np.float64)
    spectrum = own * k**-alpha / (k**-alpha).sum() + context / hidden
    participation = float(spectrum.sum() ** 2 / (spectrum**2).sum())
    return (shared + context) / total, shared / total, participation


class ModelProbe:
    """The probe a run calls at low frequency (each validation): on a slice of the
    held-out batches, the output distribution and the first, middle and last layers."""

    def __init__(self, arch: Architecture, base_loss: float, final_loss: float,
                 rng: random.Random) -> None:  # fmt: skip
        self.arch = arch
        self.rng = rng
        self.base_loss = base_loss  # where the run started (ln V for a model from scratch)
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
