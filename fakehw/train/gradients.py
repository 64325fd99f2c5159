"""The gradient a step measures, layer by layer, and what clipping does to it.

``clip_grad_norm_`` computes one global norm over every parameter: the square root of
the sum of each parameter's squared norm. Here the global norm comes from the learning
curve (``fakehw.train.learning``) and is split over the model's parameter groups
(``embed_tokens``, ``layers.N``, ``norm``, ``lm_head``) by shares of its square, so the
groups' squares add up to the global norm's square exactly. The shares follow the shape
real runs show: the output head and the first layers carry the most, the middle less,
and each step's shares wander a little. A loss spike's gradient burst sits in a few
adjacent layers, most often near the input (the embeddings and first blocks, where
spikes are seen to start), and the split puts it there.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from fakehw.train.catalog import Architecture
from fakehw.train.events import largest

SPIKE_LAYERS = 3  # adjacent layers a gradient burst sits in


def group_names(arch: Architecture, lora: bool) -> list[str]:
    """The parameter groups a per-layer gradient norm is reported for."""
    layers = [f"layers.{i}" for i in range(arch.layers)]
    if lora:  # only the adapters have gradients
        return layers
    head = [] if arch.tied_embeddings else ["lm_head"]
    return ["embed_tokens", *layers, "norm", *head]


@dataclass(frozen=True)
class GradientSplit:
    names: tuple[str, ...]
    norms: tuple[float, ...]  # per group; sqrt(sum of squares) is the global norm
    burst: tuple[str, ...] = ()  # where a spike's burst sits (empty: none)

    def pairs(self) -> tuple[tuple[str, float], ...]:
        return tuple(zip(self.names, self.norms, strict=True))

    def largest(self, count: int) -> list[tuple[str, float]]:
        return largest(self.pairs(), count)


class GradientProfile:
    """Splits a step's global gradient norm over the parameter groups."""

    def __init__(self, arch: Architecture, lora: bool, rng: random.Random) -> None:
        self.rng = rng
        self.names = group_names(arch, lora)
        depth = max(1, arch.layers - 1)
        shares = []
        for name in self.names:
            if name.startswith("layers."):
                x = int(name.split(".")[1]) / depth
                # the first blocks and the last carry more than the middle
                shares.append(1.0 + 1.6 * math.exp(-x / 0.12) + 0.8 * x**3)
            elif name == "embed_tokens":
                shares.append(0.6 * arch.layers**0.5)  # sparse rows, a large matrix
            elif name == "lm_head":
                shares.append(0.35 * arch.layers)  # every token's logits
            else:  # the final norm: few parameters
                shares.append(0.02)
        self.base = shares

    def split(self, grad_norm: float, burst: bool) -> GradientSplit:
        """``grad_norm`` over the groups; ``burst``: a spike's step."""
        rng = self.rng
        weights = [share * math.exp(rng.gauss(0, 0.15)) for share in self.base]
        where: tuple[str, ...] = ()
        if burst:
            # the burst holds most of the norm in a few adjacent blocks near the input
            layer_ids = [i for i, n in enumerate(self.names) if n.startswith("layers.")]
            start = min(len(layer_ids) - 1, int(rng.expovariate(1 / 2.5)))
            chosen = layer_ids[start : start + SPIKE_LAYERS]
            if "embed_tokens" in self.names and start == 0:
                chosen = [self.names.index("embed_tokens"), *chosen]
            quiet = sum(weights)
            for i in chosen:
                weights[i] += quiet * rng.uniform(6.0, 14.0) / len(chosen)
            where = tuple(self.names[i] for i in chosen)
        total = sum(weights)
        norms = tuple(grad_norm * math.sqrt(w / total) for w in weights)
        return GradientSplit(tuple(self.names), norms, where)


class ClipCounter:
    """``clip_grad_norm_(max_norm)`` over a window of steps: how many were clipped and
    the mean factor clipping scaled their gradients by (``max_norm / norm``)."""

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm
        self.steps = 0
        self.clipped = 0
        self.coef_sum = 0.0

    def add(self, grad_norm: float) -> None:
        self.steps += 1
        if grad_norm > self.max_norm:
            self.clipped += 1
            self.coef_sum += self.max_norm / grad_norm

    @property
    def rate(self) -> float:
        return self.clipped / self.steps if self.steps else 0.0

    @property
    def mean_coef(self) -> float:
        """1.0 when nothing was clipped (gradients kept as they were)."""
        return self.coef_sum / self.clipped if self.clipped else 1.0

    def reset(self) -> None:
        self.steps = self.clipped = 0
        self.coef_sum = 0.0
