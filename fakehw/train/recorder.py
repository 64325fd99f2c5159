"""Who keeps a run's records beside its log: one interface, and the fan-out the engine
talks to.

The engine hands every record (``fakehw.train.events``) to one :class:`Records`,
which passes it to each recorder in turn: the ``--metrics-jsonl`` writer
(``fakehw.train.metrics``) and, with ``--output-dir``, what the run leaves on disk
(``fakehw.train.output``: TensorBoard, per-rank logs, checkpoint directories,
``run.json``). A recorder overrides what it keeps; every other call does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from fakehw.train.events import (
    BenchmarkReport,
    CheckpointInfo,
    EarlyStop,
    EpochSummary,
    EvalResult,
    ExportArtifact,
    GpuSample,
    GradientReport,
    Incident,
    ProbeResult,
    QuantizeResult,
    RunStart,
    StepMetrics,
    StepSample,
    Summary,
)

Files = list[tuple[str, int]]  # (name inside a directory, bytes)


class Recorder:
    """One keeper of a run's records."""

    def started(self, start: RunStart) -> None:
        """The ranks are up (after NCCL's set-up, before the first step)."""

    def step_taken(self, sample: StepSample) -> None:
        """Any optimizer step, logged or not."""

    def step(self, m: StepMetrics) -> None:
        """A logged step."""

    def gpus(self, sample: GpuSample) -> None:
        """The job's GPUs at a logged step."""

    def eval(self, r: EvalResult) -> None:
        """An evaluation, during training or the final one."""

    def incident(self, i: Incident) -> None:
        """A warning: a loss spike, an overflow, a slow or failed rank."""

    def probe(self, p: ProbeResult) -> None:
        """A model probe (after a validation)."""

    def gradients(self, g: GradientReport) -> None:
        """Per-group gradient norms and clipping since the last report."""

    def early_stop(self, e: EarlyStop) -> None:
        """--early-stopping ends training (the best checkpoint is loaded back)."""

    def epoch_end(self, e: EpochSummary) -> None:
        """An epoch of a multi-epoch task is over."""

    def checkpoint_started(self, step: int, path: str) -> None:
        """A save begins (its directory appears; its files come when it is done)."""

    def write_checkpoint(self, step: int, path: str, files: Files) -> Files:
        """A checkpoint being saved: returns its files as they are (a recorder that
        writes them gives the sizes of what it wrote)."""
        return files

    def checkpoint(self, c: CheckpointInfo) -> list[str]:
        """A checkpoint saved; returns the paths of older ones it deleted to keep the
        framework's limit (``save_total_limit``)."""
        return []

    def removed(self, paths: list[str], time: float) -> None:
        """Older checkpoints were deleted to keep the framework's limit."""

    def resumed(self, step: int, path: str, files: Files) -> None:
        """The run starts from an earlier run's checkpoint at ``path``."""

    def export(self, a: ExportArtifact) -> None:
        """A model exported after training."""

    def quantized(self, q: QuantizeResult) -> None:
        """--quantize: the quantized model evaluated."""

    def benchmarks(self, b: BenchmarkReport) -> None:
        """lm-eval-harness has scored a model (the exported one, or its quantized copy)."""

    def training_ended(self, s: Summary) -> None:
        """The training loop is over (the final evaluation and exports follow)."""

    def finished(self, s: Summary) -> None:
        """The run is over: finished, stopped early or interrupted."""

    def failed(self, lines: list[str], time: float) -> None:
        """The job failed (a GPU out of memory or lost, the daemon gone): what the
        ranks and torchrun printed."""

    def close(self) -> None:
        """Release what is open; called once, on every exit path."""


class Records(Recorder):
    """Every record, to each recorder in turn."""

    def __init__(self, recorders: list[Recorder]) -> None:
        self.recorders = recorders

    @property
    def keeping(self) -> bool:
        """Whether anyone keeps records (without --metrics-jsonl or --output-dir, no one:
        the engine then builds none of the records only they would read)."""
        return bool(self.recorders)

    def _each(self, tell: Callable[[Recorder], object]) -> None:
        for recorder in self.recorders:
            tell(recorder)

    def started(self, start: RunStart) -> None:
        self._each(lambda recorder: recorder.started(start))

    def step_taken(self, sample: StepSample) -> None:
        self._each(lambda recorder: recorder.step_taken(sample))

    def step(self, m: StepMetrics) -> None:
        self._each(lambda recorder: recorder.step(m))

    def gpus(self, sample: GpuSample) -> None:
        self._each(lambda recorder: recorder.gpus(sample))

    def eval(self, r: EvalResult) -> None:
        self._each(lambda recorder: recorder.eval(r))

    def incident(self, i: Incident) -> None:
        self._each(lambda recorder: recorder.incident(i))

    def probe(self, p: ProbeResult) -> None:
        self._each(lambda recorder: recorder.probe(p))

    def gradients(self, g: GradientReport) -> None:
        self._each(lambda recorder: recorder.gradients(g))

    def early_stop(self, e: EarlyStop) -> None:
        self._each(lambda recorder: recorder.early_stop(e))

    def epoch_end(self, e: EpochSummary) -> None:
        self._each(lambda recorder: recorder.epoch_end(e))

    def checkpoint_started(self, step: int, path: str) -> None:
        self._each(lambda recorder: recorder.checkpoint_started(step, path))

    def write_checkpoint(self, step: int, path: str, files: Files) -> Files:
        for recorder in self.recorders:
            files = recorder.write_checkpoint(step, path, files)
        return files

    def checkpoint(self, c: CheckpointInfo) -> list[str]:
        removed: list[str] = []
        for recorder in self.recorders:
            removed += recorder.checkpoint(c)
        if removed:
            self.removed(removed, c.time)
        return removed

    def removed(self, paths: list[str], time: float) -> None:
        self._each(lambda recorder: recorder.removed(paths, time))

    def resumed(self, step: int, path: str, files: Files) -> None:
        self._each(lambda recorder: recorder.resumed(step, path, files))

    def export(self, a: ExportArtifact) -> None:
        self._each(lambda recorder: recorder.export(a))

    def quantized(self, q: QuantizeResult) -> None:
        self._each(lambda recorder: recorder.quantized(q))

    def benchmarks(self, b: BenchmarkReport) -> None:
        self._each(lambda recorder: recorder.benchmarks(b))

    def training_ended(self, s: Summary) -> None:
        self._each(lambda recorder: recorder.training_ended(s))

    def finished(self, s: Summary) -> None:
        self._each(lambda recorder: recorder.finished(s))

    def failed(self, lines: list[str], time: float) -> None:
        self._each(lambda recorder: recorder.failed(lines, time))

    def close(self) -> None:
        """Closes every recorder, even when one of them fails (the first error is raised
        once all are closed)."""
        with contextlib.ExitStack() as closing:
            for recorder in reversed(self.recorders):
                closing.callback(recorder.close)
