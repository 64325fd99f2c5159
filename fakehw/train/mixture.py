"""A run on several datasets at once (``--mixture``): what each step takes from each
source, and each source's share of the step's loss.

**Blending.** As Megatron's ``BlendedDataset`` does, every packed sequence comes whole
from one source, and the sources' counts never stray more than a sample from their
weights: after ``n`` sequences, source ``i`` has given ``w_i * n`` of them, rounded
so that the counts add up to ``n`` (largest remainders). A step's counts are the
difference of two such totals, so they add up to the global batch, and a run's
totals to the samples it trained on.

**Losses.** A source's tokens are as hard to predict as its ``loss_factor`` says
(``fakehw.train.catalog``), once the model has learned: at a point of the curve where
the reference data's loss is ``L``, source ``i`` has ``L * f_i``, and the mixture
``L * sum(w_i * f_i)`` (a model that knows nothing guesses every source's tokens
alike: ``f_i`` grows from 1 as it learns, ``LearningCurve.source_factors``). A step
measures each source on its own sequences, with the scatter of a mean over that many
(``SEQUENCE_LOSS_SPREAD`` over the square root of the count), then normalises: the
sequences' mean of the sources' losses is the step's loss, exactly, as the loss a
framework logs is the mean over the batch's tokens (all sequences hold ``seq``).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from fakehw.train.catalog import TRAINS_ON, Dataset, find_dataset
from fakehw.train.events import SourceLoss

SEQUENCE_LOSS_SPREAD = 0.3  # standard deviation of sequences' mean losses (nats)


class MixtureError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    dataset: Dataset
    weight: float  # normalised: the weights of a mixture add up to 1

    @property
    def name(self) -> str:
        return self.dataset.short_name


@dataclass(frozen=True)
class Mixture:
    sources: tuple[Source, ...]

    @property
    def loss_factor(self) -> float:
        """The mixture's loss relative to the reference data's."""
        return sum(s.weight * s.dataset.loss_factor for s in self.sources)

    @property
    def tokens(self) -> int:
        """An epoch of the mixture: every source's tokens once."""
        return sum(s.dataset.tokens for s in self.sources)

    @property
    def samples(self) -> int:
        return sum(s.dataset.samples for s in self.sources)

    def as_dataset(self, kind: str) -> Dataset:
        """The mixture as one dataset, for what counts the data as a whole."""
        return Dataset(
            " + ".join(s.name for s in self.sources),
            kind,
            self.tokens,
            self.samples,
            all(s.dataset.real for s in self.sources),
            self.loss_factor,
        )

    def passes(self, tokens: float) -> list[float]:
        """How many times ``tokens`` of training read each source: a weight above a
        source's share of the tokens repeats it (upsampling), one below leaves part unread."""
        return [s.weight * tokens / s.dataset.tokens for s in self.sources]


def parse(text: str, task: str) -> Mixture:
    """``--mixture fineweb-edu:0.7,starcoderdata:0.2,open-web-math:0.1``: names (the
    short one will do) and positive weights, normalised as Megatron normalises
    ``--data-path``'s; every source of the kind the task trains on."""
    wanted = TRAINS_ON[task]
    if task == "dpo":
        raise MixtureError(
            f"--mixture blends datasets of packed sequences; {task} trains on pairs of one "
            "preference dataset (use --dataset)"
        )
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) < 2:
        raise MixtureError(
            f"--mixture {text!r} names fewer than two datasets (example: "
            "fineweb-edu:0.7,starcoderdata:0.2,open-web-math:0.1); one is --dataset"
        )
    found: list[tuple[Dataset, float]] = []
    for part in parts:
        match = re.fullmatch(r"([^:]+):(\d+(?:\.\d*)?|\.\d+)", part, re.ASCII)
        if not match:
            raise MixtureError(
                f"--mixture: {part!r} is not NAME:WEIGHT (example: starcoderdata:0.2)"
            )
        try:
            dataset = find_dataset(match.group(1))
        except ValueError as exc:
            raise MixtureError(f"--mixture: {exc}") from None
        weight = float(match.group(2))
        if not weight > 0 or not math.isfinite(weight):
            raise MixtureError(f"--mixture: {part!r} has no weight (weights are positive)")
        if dataset.kind not in wanted:
            raise MixtureError(
                f"--mixture: {dataset.name} is {dataset.kind} data; {task} runs blend "
                f"{' or '.join(wanted)} datasets (fake-train --list-datasets lists them)"
            )
        if any(d == dataset for d, _ in found):
            raise MixtureError(f"--mixture names {dataset.name} twice")
        found.append((dataset, weight))
    total = sum(w for _, w in found)
    return Mixture(tuple(Source(d, w / total) for d, w in found))


def apportion(count: int, weights: list[float]) -> list[int]:
    """``count`` samples shared by weight, each within one of ``w * count``, adding up to
    ``count`` (largest remainders; ties to the first)."""
    exact = [w * count for w in weights]
    whole = [math.floor(x) for x in exact]
    left = count - sum(whole)
    order = sorted(range(len(weights)), key=lambda i: (whole[i] - exact[i], i))
    for i in order[:left]:
        whole[i] += 1
    return whole


class Blend:
    """What a run's steps and evaluations draw from each source, and their losses: the
    training loop's view of a mixture. The counts depend on the sample index only (a
    restart that replays or skips batches draws what the index gives there); the
    losses' scatter has a stream of its own, and an evaluation's is the weights'
    (the same weights on the same batches give the same losses)."""

    def __init__(self, mixture: Mixture, global_batch: int, seed: int) -> None:
        self.mixture = mixture
        self.global_batch = global_batch
        self.seed = seed
        self.rng = random.Random(seed)
        self.weights = [s.weight for s in mixture.sources]
        self.window = Tally(mixture)

    def counts(self, start: int, count: int) -> list[int]:
        """The sources' shares of samples ``start`` .. ``start + count`` of the blend."""
        before = apportion(start, self.weights)
        after = apportion(start + count, self.weights)
        return [a - b for a, b in zip(after, before, strict=True)]

    def taken(self, step: int) -> tuple[int, ...]:
        """What the first ``step`` steps took from each source."""
        return tuple(apportion(step * self.global_batch, self.weights))

    def step(self, step: int, loss: float, factors: list[float]) -> None:
        """Step ``step`` (1-based) measured ``loss`` over its batch; the sources' loss
        factors there (``LearningCurve.source_factors``)."""
        counts = self.counts((step - 1) * self.global_batch, self.global_batch)
        self.window.add(self.split(loss, counts, factors, self.rng))

    def interval(self) -> tuple[SourceLoss, ...]:
        """The steps since the last call: each source's samples and mean loss."""
        found = tuple(self.window.result())
        self.window.reset()
        return found

    def evaluate(
        self, weights_step: int, samples: int, loss: float, factors: list[float]
    ) -> tuple[SourceLoss, ...]:
        """A validation of ``samples`` blended by the weights, of mean ``loss``."""
        rng = random.Random(self.seed * 104729 + weights_step)
        return tuple(self.split(loss, apportion(samples, self.weights), factors, rng))

    def split(
        self, loss: float, counts: list[int], factors: list[float], rng: random.Random
    ) -> list[SourceLoss]:
        """The sources' losses on their ``counts`` sequences, whose sequence-weighted
        mean is ``loss``."""
        raw = []
        for factor, n in zip(factors, counts, strict=True):
            scatter = SEQUENCE_LOSS_SPREAD / math.sqrt(n) if n else 0.0
            raw.append(max(0.05 * factor * loss, factor * loss + rng.gauss(0, scatter)))
        mean = sum(r * n for r, n in zip(raw, counts, strict=True)) / sum(counts)
        return [
            SourceLoss(s.name, n, loss * r / mean)
            for s, n, r in zip(self.mixture.sources, counts, raw, strict=True)
        ]


class Tally:
    """Several steps' source losses as one interval's: each source's samples added up,
    its loss their sample-weighted mean (so the interval's mean loss is theirs)."""

    def __init__(self, mixture: Mixture) -> None:
        self.names = [s.name for s in mixture.sources]
        self.reset()

    def reset(self) -> None:
        self.samples = [0] * len(self.names)
        self.weighted = [0.0] * len(self.names)

    def add(self, losses: list[SourceLoss]) -> None:
        for i, part in enumerate(losses):
            self.samples[i] += part.samples
            self.weighted[i] += part.loss * part.samples

    def result(self) -> list[SourceLoss]:
        return [
            SourceLoss(name, n, w / n if n else 0.0)
            for name, n, w in zip(self.names, self.samples, self.weighted, strict=True)
        ]
