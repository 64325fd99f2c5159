"""A framework's layout: where a run's files go, what TensorBoard tags it writes, what
its checkpoint directories hold beside the weights, and how many it keeps.

This base is fake-train's own framework (the default style): ``DIR/checkpoints/
step_0001000/`` with ``latest`` and ``best`` symlinks beside them, the last three
kept (and the best), ``DIR/tensorboard/`` with the run's figures and the GPUs'
readings, ``DIR/logs/train_rank{N}.log``. The other frameworks override what they do
differently (``hf``, ``megatron``, ``deepspeed``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from fakehw.train.events import (
    EvalResult,
    GpuSample,
    ProbeResult,
    RunStart,
    StepMetrics,
    StepSample,
    Summary,
)
from fakehw.train.plan import RunPlan

Scalar = tuple[str, float, int]  # (tag, value, step)


class Layout:
    name = "default"
    checkpoint_pattern = r"step_(\d+)"  # a checkpoint directory's name, its step
    keep_last: int | None = 3  # checkpoints kept besides the best; None keeps them all
    keeps_best = True
    new_event_file_after_training = False

    def __init__(self, plan: RunPlan, root: Path, checkpoint_name: Callable[[int], str]) -> None:
        self.plan = plan
        self.root = root
        self.checkpoint_name = checkpoint_name  # the style's name of a step's directory
        self.last_step: StepMetrics | None = None
        self.best_step: int | None = None
        self.best_loss: float | None = None
        self.evals: dict[int, float] = {}  # step: validation loss

    # ------------------------------------------------------------- where
    @property
    def checkpoints(self) -> Path:
        """Where the checkpoint directories go (the log's save directory)."""
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def tensorboard_dir(self, start: RunStart) -> Path:
        return self.root / "tensorboard"

    def existing_steps(self) -> list[int]:
        """The steps of the checkpoints an earlier run left here, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        steps = []
        for entry in self.checkpoints.iterdir():
            found = re.fullmatch(self.checkpoint_pattern, entry.name)
            if found and entry.is_dir() and not entry.is_symlink():
                steps.append(int(found[1]))
        return sorted(steps)

    def load_state(self, directory: Path) -> None:
        """Resuming: what the checkpoint's trainer_state.json says of the run so far (a
        checkpoint without a readable one tells nothing)."""
        try:
            state = json.loads((directory / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(state, dict):
            self.restore(state)

    def restore(self, state: dict[str, object]) -> None:
        """The best checkpoint and the evaluations, from this framework's trainer state."""
        best_step, best_loss = state.get("best_step"), state.get("best_val_loss")
        self.best_step = best_step if isinstance(best_step, int) else None
        self.best_loss = float(best_loss) if isinstance(best_loss, int | float) else None
        evals = state.get("val_loss")
        if isinstance(evals, dict):
            self.evals = {int(step): float(loss) for step, loss in evals.items()}

    def tensorboard_rank(self) -> int:
        """The rank whose process writes TensorBoard (Megatron: the last)."""
        return 0

    def event_file_name(self, start: RunStart, wall_time: float, index: int) -> str:
        """PyTorch's ``SummaryWriter`` name: time, host and PID of the writing rank."""
        rank = self.tensorboard_rank()
        host = start.hostnames[rank // self.plan.gpus_per_node]
        return f"events.out.tfevents.{int(wall_time):010d}.{host}.{start.pids[rank]}.{index}"

    def logged_loss(self, m: StepMetrics) -> float:
        """The loss the framework's log shows for a logged step: the step's own here;
        the frameworks that average over the logging interval override it."""
        return m.loss

    # --------------------------------------------------------- TensorBoard
    def text_summaries(self) -> list[tuple[str, str]]:
        return [("config", json.dumps(self.config(), indent=2))]

    def config(self) -> dict[str, object]:
        plan = self.plan
        return {
            "model": plan.model.name,
            "task": plan.task,
            "dataset": plan.dataset.name,
            "gpus": plan.gpus,
            "global_batch": plan.global_batch,
            "seq": plan.seq,
            "total_steps": plan.total_steps,
            "peak_lr": plan.peak_lr,
            "warmup_steps": plan.warmup_steps,
            "schedule": plan.schedule,
            "precision": plan.precision,
            "seed": plan.seed,
        }

    def every_step_scalars(self, sample: StepSample) -> list[Scalar]:
        """What the framework writes at every step (none here: at logged steps)."""
        return []

    def tensorboard_arg(self) -> str:
        """The TensorBoard directory as the framework's arguments name it."""
        return str(self.root / "tensorboard")

    def step_scalars(self, m: StepMetrics) -> list[Scalar]:
        """The figures of the default style's step line, as it prints them (the step's
        own loss and time, not the interval's means)."""
        values: list[Scalar] = [
            ("train/loss", self.logged_loss(m), m.step),
            ("train/learning_rate", m.lr, m.step),
            ("train/grad_norm", m.grad_norm, m.step),
            ("train/tokens_per_s", m.tokens_per_s, m.step),
            ("train/mfu", m.mfu, m.step),
            ("train/tflops_per_gpu", m.tflops_per_gpu, m.step),
            ("train/step_time_s", m.step_time_s, m.step),
            ("train/samples_per_s", m.samples_per_s, m.step),
        ]
        if m.ppl is not None:
            values.append(("train/ppl", m.ppl, m.step))
        if m.loss_scale is not None:
            values.append(("train/loss_scale", m.loss_scale, m.step))
        return values + self.gradient_scalars(m)

    def gradient_scalars(self, m: StepMetrics) -> list[Scalar]:
        """Clipping over the logging interval and the step's norm per parameter group."""
        values: list[Scalar] = [
            ("train/clip_rate", m.clip_rate, m.step),
            ("train/clip_coef", m.clip_coef, m.step),
        ]
        values += [(f"grad_norm/{name}", norm, m.step) for name, norm in m.layer_grad_norms]
        return values

    def source_scalars(self, m: StepMetrics) -> list[Scalar]:
        """--mixture: each source's loss over the logging interval and the sequences it
        has given, under ``mixture/<source>/`` whatever the framework."""
        values: list[Scalar] = []
        for source, seen in zip(m.sources, m.sources_seen, strict=True):
            values += [
                (f"mixture/{source.name}/loss", source.loss, m.step),
                (f"mixture/{source.name}/samples_seen", seen, m.step),
            ]
        return values

    def eval_source_scalars(self, r: EvalResult) -> list[Scalar]:
        return [(f"mixture/{s.name}/eval_loss", s.loss, r.step) for s in r.sources]

    def probe_scalars(self, p: ProbeResult) -> list[Scalar]:
        """The model probe's figures under ``probe/`` (a tracker's names)."""
        return [(f"probe/{name}", value, p.step) for name, value in p.values().items()]

    def gpu_scalars(self, sample: GpuSample) -> list[Scalar]:
        step = sample.step
        return [
            ("gpu/power_w", sample.power_w_mean, step),
            ("gpu/power_w_max", sample.power_w_max, step),
            ("gpu/temp_c", sample.temp_c_mean, step),
            ("gpu/temp_c_max", sample.temp_c_max, step),
            ("gpu/sm_clock_mhz", sample.sm_clock_mhz_mean, step),
            ("gpu/memory_used_gib", sample.memory_used_gib_mean, step),
            ("gpu/util", sample.util_mean, step),
        ]

    def eval_scalars(self, r: EvalResult) -> list[Scalar]:
        values: list[Scalar] = [
            ("eval/loss", r.loss, r.step),
            ("eval/runtime_s", r.runtime_s, r.step),
            ("eval/tokens_per_s", r.tokens_per_s, r.step),
        ]
        if r.ppl is not None:
            values.append(("eval/ppl", r.ppl, r.step))
        return values

    def final_scalars(self, s: Summary) -> list[Scalar]:
        return []

    # ---------------------------------------------------------- checkpoints
    def observe_step(self, m: StepMetrics) -> None:
        """A logged step, for the trainer state a checkpoint saves."""
        self.last_step = m

    def observe_eval(self, r: EvalResult) -> None:
        """An evaluation: the best checkpoint is the one with the lowest val loss."""
        self.evals[r.step] = r.loss

    def observe_final(self, s: Summary) -> None:
        """The training loop's end (HF logs its train_runtime then)."""

    def saved(self, step: int) -> None:
        """A checkpoint of ``step`` is complete: is it the best so far?"""
        loss = self.evals.get(step)
        better = loss is not None and (self.best_loss is None or loss < self.best_loss)
        if self.keeps_best and better:
            self.best_step, self.best_loss = step, loss

    def state_files(self, step: int) -> dict[str, bytes]:
        """The small files of a checkpoint, with their contents."""
        m = self.last_step
        state = {
            "step": step,
            "epoch": step / self.plan.steps_per_epoch,
            "tokens_seen": step * self.plan.trained_tokens_per_step,
            "train_loss": None if m is None else self.logged_loss(m),
            "learning_rate": None if m is None else m.lr,
            "best_step": self.best_step,
            "best_val_loss": self.best_loss,
            "val_loss": dict(sorted(self.evals.items())),
        }
        return {"trainer_state.json": (json.dumps(state, indent=2) + "\n").encode()}

    def retention(self, kept: list[int]) -> list[int]:
        """Of the checkpoints on disk (steps, oldest first, the newest just saved),
        those to delete: all but the last ``keep_last`` and the best."""
        if self.keep_last is None:
            return []
        recent = set(kept[-self.keep_last :])
        return [s for s in kept if s not in recent and s != self.best_step]

    def removal_line(self, path: str) -> str:
        """What the framework logs (on rank 0) as it deletes a checkpoint."""
        return f"removed checkpoint {path} (keeping the last {self.keep_last} and the best)"

    def point(self, latest: int) -> None:
        """The pointers beside the checkpoints: ``latest`` and ``best`` symlinks."""
        self._symlink("latest", self.checkpoint_name(latest))
        if self.best_step is not None:
            self._symlink("best", self.checkpoint_name(self.best_step))

    def _symlink(self, name: str, target: str) -> None:
        link = self.checkpoints / name
        partial = self.checkpoints / f".{name}.partial"
        if partial.is_symlink() or partial.exists():
            partial.unlink()
        os.symlink(target, partial)
        partial.replace(link)  # atomic: a reader never finds no link

    def pointer_names(self) -> set[str]:
        """Entries beside the checkpoint directories that are not checkpoints."""
        return {"latest", "best"}
