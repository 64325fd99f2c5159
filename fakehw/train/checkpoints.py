"""A run's checkpoints: where each goes, writing one while Ctrl-C waits (or abandons
it), and what a given-up save costs. Called by the engine (``fakehw.train.engine``),
whose state it reads and updates."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from fakehw.train import arithmetic as ar
from fakehw.train.events import CheckpointInfo
from fakehw.train.styles.base import size

if TYPE_CHECKING:
    from fakehw.train.engine import Engine


class SaveAbandoned(KeyboardInterrupt):
    """Ctrl-C again while a checkpoint was being written: the save is given up."""


class SaveGuard:
    """While a checkpoint is written, Ctrl-C does not cut it short (as a careful
    trainer's signal handler does): the first press is only noted (``pressed``)
    and the save goes on; another press raises ``SaveAbandoned``, and so does
    the first one with ``abandon_at_once`` (the save Ctrl-C itself started)."""

    def __init__(self, abandon_at_once: bool = False) -> None:
        self.abandon_at_once = abandon_at_once
        self.pressed = False
        self._previous: Callable[[int, FrameType | None], object] | int | None = None

    def __enter__(self) -> SaveGuard:
        if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:  # ignored stays ignored
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed or self.abandon_at_once:
            raise SaveAbandoned
        self.pressed = True


class Checkpoints:
    """Writes and names the checkpoints of one run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def checkpoint_name(self, step: int) -> str:
        engine = self.engine
        return engine.style.checkpoint_dir(step)

    def checkpoint_path(self, step: int) -> str:
        engine = self.engine
        return f"{engine.plan.save_dir}/{self.checkpoint_name(step)}"

    def loaded(self, step: int, then: str = "") -> None:
        """A checkpoint read back to train on (a resume, a rollback): what it held."""
        engine = self.engine
        engine.style.say(
            engine.clock.now(),
            "resume",
            f"loaded {self.checkpoint_path(step)} (step {step:,}, "
            f"{size(engine.plan.checkpoint_bytes)}): model, optimizer, scheduler and RNG "
            f"states{then}",
        )

    def unsaved_steps(self) -> int:
        """Training steps since the last complete checkpoint (or since step 0)."""
        engine = self.engine
        return engine.step - (engine.last_checkpoint or 0)

    def last_complete(self) -> str:
        engine = self.engine
        if engine.last_checkpoint is None:
            return "no checkpoint is complete: the run would start again from step 0"
        return (
            f"the last complete checkpoint is {self.checkpoint_path(engine.last_checkpoint)} "
            f"(step {engine.last_checkpoint:,})"
        )

    def final_checkpoint(self) -> None:
        """The save at the end of training, of what is not saved yet."""
        engine = self.engine
        engine.finishing = True
        if self.unsaved_steps() > 0:
            self.checkpoint(reason="final")

    def checkpoint(self, reason: str = "periodic") -> CheckpointInfo:
        """Write a checkpoint of this step. Ctrl-C while it is written lets it finish,
        then ends the run (``KeyboardInterrupt``); Ctrl-C again abandons it."""
        engine = self.engine
        try:
            with SaveGuard(abandon_at_once=reason == "interrupt") as guard:
                info = self.write_checkpoint(reason, guard)
        except SaveAbandoned:
            if engine.last_checkpoint != engine.step:  # else it was complete after all
                self.abandoned()
            raise
        if guard.pressed:
            raise KeyboardInterrupt
        return info

    def write_checkpoint(self, reason: str, guard: SaveGuard) -> CheckpointInfo:
        engine = self.engine
        plan, world, style = engine.plan, engine.world, engine.style
        style.term.clear_status()
        if plan.par.sharded_checkpoint:
            world.phase("checkpoint")
        else:
            world.phase("barrier")  # the others wait in a collective while rank 0 writes
            world.phase("checkpoint", ranks=[0])
        path = self.checkpoint_path(engine.step)
        started = engine.clock.now()
        style.checkpoint_start(started, engine.step, path, reason)
        engine.records.checkpoint_started(engine.step, path)
        total = plan.checkpoint_bytes
        writers = plan.nodes if plan.par.sharded_checkpoint else 1
        seconds = ar.checkpoint_write_s(total, writers) * engine.rng.uniform(0.9, 1.15)
        deadline = engine.deadline(seconds)
        if not engine.wait_until(deadline, check=reason != "interrupt", stop=lambda: guard.pressed):
            engine.interrupt_told = True
            style.term.clear_status()
            message = (
                f"interrupted: letting the checkpoint of step {engine.step:,} finish, then "
                "exiting (Ctrl-C again to abandon it)"
            )
            style.say(engine.clock.now(), "signal", style.term.paint(message, "yellow"))
            engine.wait_until(deadline, check=False)
        files = engine.records.write_checkpoint(
            engine.step, path, style.checkpoint_files(engine.step, total)
        )
        info = CheckpointInfo(
            step=engine.step,
            path=path,
            files=tuple(files),
            bytes=sum(nbytes for _, nbytes in files),  # what the files hold, headers and all
            seconds=seconds,
            time=engine.clock.now(),
            reason=reason,
        )
        engine.saved.append(info)
        engine.last_checkpoint = engine.step
        style.checkpoint_done(info)
        for removed in engine.records.checkpoint(info):
            style.checkpoint_removed(engine.clock.now(), removed)
        return info

    def abandoned(self) -> None:
        """Say what a save given up costs: the checkpoint, and the steps since the last."""
        engine = self.engine
        term = engine.style.term
        term.clear_status()
        first = (engine.last_checkpoint or 0) + 1
        lost = (
            f"steps {first:,}-{engine.step:,} are" if first < engine.step else f"step {first:,} is"
        )
        message = (
            f"Ctrl-C again: abandoned the checkpoint of step {engine.step:,}; "
            f"{self.checkpoint_path(engine.step)} is incomplete and {lost} lost; "
            f"{self.last_complete()}"
        )
        engine.style.say(engine.clock.now(), "signal", term.paint(message, "red"))
