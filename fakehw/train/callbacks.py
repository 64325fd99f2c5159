"""The trainer's callbacks: early stopping on the validation loss and the epoch's
metrics, as the engine (``fakehw.train.engine``) calls them.

``EarlyStopping`` is Hugging Face's ``EarlyStoppingCallback`` with
``load_best_model_at_end``: after each evaluation it compares ``eval_loss`` with the
best so far; an evaluation that does not improve on it by more than ``threshold``
counts against ``patience``, one that does resets the count; when the count reaches
``patience`` training stops and the best checkpoint is loaded back. ``EpochMeter``
keeps what a metrics logger reports at an epoch's end: the mean training loss of the
epoch's steps, the steps and tokens, the time.
"""

from __future__ import annotations

from dataclasses import dataclass


class EarlyStopping:
    metric = "eval_loss"

    def __init__(self, patience: int, threshold: float = 0.0) -> None:
        self.patience = patience
        self.threshold = threshold
        self.best: float | None = None
        self.best_step: int | None = None
        self.waited = 0  # evaluations since the last improvement

    def observe(self, step: int, value: float) -> bool:
        """An evaluation's ``value`` at ``step``; True when training should stop."""
        if self.best is None or value < self.best - self.threshold:
            self.best, self.best_step, self.waited = value, step, 0
            return False
        self.waited += 1
        return self.waited >= self.patience


@dataclass(frozen=True)
class EpochTotals:
    epoch: int  # zero-based, the epoch that ended
    steps: int  # steps this run trained in it (a resumed run: from where it resumed)
    loss_sum: float
    tokens: int
    started: float  # story time of its first step


class EpochMeter:
    """The running epoch's totals."""

    def __init__(self, epoch: int, now: float) -> None:
        self.epoch = epoch
        self._start(now)

    def _start(self, now: float) -> None:
        self.steps = 0
        self.loss_sum = 0.0
        self.tokens = 0
        self.started = now

    def add(self, loss: float, tokens: int) -> None:
        self.steps += 1
        self.loss_sum += loss
        self.tokens += tokens

    def close(self, now: float) -> EpochTotals:
        """The epoch ended: its totals; the meter starts the next one."""
        totals = EpochTotals(self.epoch, self.steps, self.loss_sum, self.tokens, self.started)
        self.epoch += 1
        self._start(now)
        return totals
