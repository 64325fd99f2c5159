"""Anomaly detection on a run's own numbers, as a training framework's monitor does it.

The learning curve (``fakehw.train.learning``) makes things happen (a loss spike, a
divergence, a plateau, a rank's stall); this module knows nothing of that: it watches
each step's loss, gradient norm, step time and learning rate and finds them, each by
the rule its message states:

- **loss spike**: the loss is more than ``SPIKE_RISE`` above the mean of the last
  ``WINDOW`` steps and ``SPIKE_SIGMAS`` of their standard deviation (the spike's own
  steps left out of that mean); **recovered** once it
  is back within ``RECOVERED_WITHIN`` of it;
- **gradient explosion**: the gradient norm is more than ``EXPLOSION_FACTOR`` times the
  median of the last ``WINDOW`` steps' norms (told once, until it is back under
  ``EXPLOSION_OVER`` times that median);
- **loss divergence**: the mean loss of the last ``DIVERGENCE_WINDOW`` steps and the
  step's own are more than ``DIVERGENCE_RISE`` above the lowest such mean seen, for that
  many steps on end (a spike decays within them; a divergence does not);
- **no convergence**: while the learning rate is high (past warmup, at least
  ``PLATEAU_LR`` of the peak), the mean loss over a window of a tenth of the steps so
  far (at least ``PLATEAU_WINDOW``) has not improved on its lowest (by more than
  ``PLATEAU_SIGMAS`` standard errors of such a mean) for ``PLATEAU_PATIENCE`` windows
  (a loss that follows a power law falls by the same share over each such window, so
  a healthy run keeps setting new lows at any step);
- **slow rank**: a step takes more than ``SLOW_FACTOR`` times the median of the last
  ``WINDOW`` steps' times; the rank is the one the per-rank timers name.

A finding is (kind, details); the engine turns it into the run's warning.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Any

WINDOW = 100
SPIKE_RISE = 0.06  # of the running mean, and at least SPIKE_SIGMAS of its spread
SPIKE_SIGMAS = 6.0
RECOVERED_WITHIN = 0.02
EXPLOSION_FACTOR = 10.0
EXPLOSION_OVER = 3.0  # an explosion is over once the norm is back under this many medians
DIVERGENCE_WINDOW = 20
DIVERGENCE_RISE = 0.15
PLATEAU_WINDOW = 200  # at least; a tenth of the steps so far
PLATEAU_BLOCK = 10
PLATEAU_PATIENCE = 3  # windows without a new best
PLATEAU_SIGMAS = 3.0  # a new best beats the old by this many standard errors
PLATEAU_LR = 0.5
SLOW_FACTOR = 1.15
SLOW_QUIET_STEPS = 200  # one slow-rank warning per this many steps
WARMUP_IGNORED = 5  # the first steps after a (re)start are slower and noisier

Finding = tuple[str, dict[str, Any]]


class AnomalyDetector:
    def __init__(self, peak_lr: float, warmup_steps: int) -> None:
        self.peak_lr = peak_lr
        self.warmup_steps = warmup_steps
        self.restart()

    def relayout(self) -> None:
        """The step's layout changed (the batch-size manager): its time is measured
        against the new layout's, not the old median."""
        self.times.clear()

    def restart(self) -> None:
        """The job (re)started: the windows start again (a restart's first steps are
        slow, and a rollback's losses are an earlier model's)."""
        self.losses: deque[float] = deque(maxlen=WINDOW)
        self.norms: deque[float] = deque(maxlen=WINDOW)
        self.times: deque[float] = deque(maxlen=WINDOW)
        self.recent: deque[float] = deque(maxlen=DIVERGENCE_WINDOW)
        self.plateau_blocks: list[float] = []  # mean losses of PLATEAU_BLOCK steps
        self.block_sum, self.block_steps = 0.0, 0
        self.spiking: float | None = None  # the running mean a spike is measured against
        self.exploding = False
        self.best_mean: tuple[float, int] | None = None  # lowest windowed mean, its step
        self.above_since: int | None = None
        self.flat_checks = 0
        self.quiet_until = {"no_convergence": 0, "loss_divergence": 0, "slow_rank": 0}
        self.seen = 0

    def observe(self, step: int, loss: float, grad_norm: float, step_s: float, lr: float,
                slowest_rank: int) -> list[Finding]:  # fmt: skip
        """One optimizer step's numbers; what they show."""
        self.seen += 1
        found: list[Finding] = []
        found += self._spike(step, loss, grad_norm)
        found += self._explosion(step, grad_norm)
        found += self._divergence(step, loss)
        found += self._plateau(step, loss, lr)
        found += self._slow(step, step_s, slowest_rank)
        if self.spiking is None:  # a spike's steps stay out of the running mean
            self.losses.append(loss)
        self.norms.append(grad_norm)
        if self.seen > WARMUP_IGNORED:
            self.times.append(step_s)
        return found

    def _spike(self, step: int, loss: float, grad_norm: float) -> list[Finding]:
        if len(self.losses) < WINDOW // 2:
            return []
        mean = sum(self.losses) / len(self.losses)
        if self.spiking is not None:
            if loss <= self.spiking * (1 + RECOVERED_WITHIN):
                self.spiking = None
                return [("recovered", {"loss": loss})]
            return []
        spread = math.sqrt(sum((v - mean) ** 2 for v in self.losses) / len(self.losses))
        if loss > mean + max(SPIKE_RISE * mean, SPIKE_SIGMAS * spread) and math.isfinite(loss):
            self.spiking = mean
            return [("loss_spike", {"loss": loss, "mean": mean, "window": len(self.losses),
                                    "grad_norm": grad_norm})]  # fmt: skip
        return []

    def _explosion(self, step: int, grad_norm: float) -> list[Finding]:
        if len(self.norms) < WINDOW // 2:
            return []
        typical = median(self.norms)
        if self.exploding:  # told once; over when the norms are back near the median
            self.exploding = grad_norm > EXPLOSION_OVER * typical
            return []
        if grad_norm > EXPLOSION_FACTOR * typical:
            self.exploding = True
            return [("grad_explosion", {"grad_norm": grad_norm, "median": typical,
                                        "ratio": grad_norm / typical,
                                        "window": len(self.norms)})]  # fmt: skip
        return []

    def _divergence(self, step: int, loss: float) -> list[Finding]:
        self.recent.append(loss)
        if len(self.recent) < DIVERGENCE_WINDOW:
            return []
        mean = sum(self.recent) / len(self.recent)
        if self.best_mean is None or mean < self.best_mean[0]:
            self.best_mean = (mean, step)
        best, best_step = self.best_mean
        if mean <= best * (1 + DIVERGENCE_RISE) or loss <= best * (1 + DIVERGENCE_RISE):
            self.above_since = None
            return []
        if self.above_since is None:
            self.above_since = step
        if (
            step - self.above_since + 1 < DIVERGENCE_WINDOW
            or step < self.quiet_until["loss_divergence"]
        ):
            return []
        self.quiet_until["loss_divergence"] = step + DIVERGENCE_WINDOW
        return [("loss_divergence", {"mean": mean, "best": best, "best_step": best_step,
                                     "window": DIVERGENCE_WINDOW,
                                     "since": self.above_since})]  # fmt: skip

    def _plateau(self, step: int, loss: float, lr: float) -> list[Finding]:
        if step <= self.warmup_steps or lr < PLATEAU_LR * self.peak_lr:
            self.plateau_blocks.clear()
            self.block_sum, self.block_steps, self.best_window = 0.0, 0, None
            return []
        self.block_sum += loss
        self.block_steps += 1
        if self.block_steps < PLATEAU_BLOCK:
            return []
        self.plateau_blocks.append(self.block_sum / PLATEAU_BLOCK)
        self.block_sum, self.block_steps = 0.0, 0
        # the window grows with the run (a tenth of its steps): a loss on a power law
        # improves on its best window mean at any point of a healthy run
        blocks = max(PLATEAU_WINDOW, step // 10) // PLATEAU_BLOCK
        if len(self.plateau_blocks) < blocks:
            return []
        recent = self.plateau_blocks[-blocks:]
        mean = sum(recent) / blocks
        # a new low counts when it is beyond the window mean's own noise
        spread = math.sqrt(sum((v - mean) ** 2 for v in recent) / (blocks - 1))
        margin = PLATEAU_SIGMAS * spread / math.sqrt(blocks)
        if self.best_window is None or mean < self.best_window[0] - margin:
            self.best_window = (mean, step)
            return []
        best, best_step = self.best_window
        window = blocks * PLATEAU_BLOCK
        if (
            step - best_step < PLATEAU_PATIENCE * window
            or step < self.quiet_until["no_convergence"]
        ):
            return []
        self.quiet_until["no_convergence"] = step + PLATEAU_PATIENCE * window
        return [("no_convergence", {"mean": mean, "best": best, "best_step": best_step,
                                    "margin": margin, "window": window, "lr": lr,
                                    "lr_share": lr / self.peak_lr})]  # fmt: skip

    def _slow(self, step: int, step_s: float, slowest_rank: int) -> list[Finding]:
        if len(self.times) < WINDOW // 2 or self.seen <= WARMUP_IGNORED:
            return []
        typical = median(self.times)
        if step_s <= SLOW_FACTOR * typical or step < self.quiet_until["slow_rank"]:
            return []
        self.quiet_until["slow_rank"] = step + SLOW_QUIET_STEPS
        return [("slow_rank", {"rank": slowest_rank, "slowdown": 100 * (step_s / typical - 1),
                               "step_s": step_s, "median_s": typical})]  # fmt: skip
