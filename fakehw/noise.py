"""Noise that looks like the real thing: neither flat lines nor white noise.

Slow wander is an Ornstein-Uhlenbeck process (mean-reverting random walk),
stepped exactly for any ``dt`` so a simulation at 10 Hz and one at 50 Hz wander
alike. Everything draws from one seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def ou_step(
    value: FloatArray, dt_s: float, tau_s: float, sigma: float, normal: FloatArray
) -> FloatArray:
    """One exact step of a zero-mean OU process with stationary deviation ``sigma``.

    ``normal`` is a standard-normal draw of ``value``'s shape (drawn by the
    caller, batched with the tick's other draws).
    """
    keep = math.exp(-dt_s / tau_s)
    spread = sigma * math.sqrt(max(0.0, 1.0 - keep * keep))
    result: FloatArray = value * keep + spread * normal
    return result


def ou_start(shape: int | tuple[int, ...], sigma: float, rng: np.random.Generator) -> FloatArray:
    """A draw from the stationary distribution, to start a process mid-stream."""
    result: FloatArray = sigma * rng.standard_normal(shape)
    return result


def clipped_normal(
    rng: np.random.Generator, size: int, mean: float, sd: float, low: float, high: float
) -> FloatArray:
    """Per-GPU manufacturing spread: normal, clipped to a plausible range."""
    result: FloatArray = np.clip(rng.normal(mean, sd, size), low, high)
    return result
