"""TensorBoard event files, as the style's framework writes them.

The encoding (protobuf events in TFRecord framing, with their CRCs) is tensorboardX's;
what goes in (tags, steps, the event file's name and directory) is the framework's,
from its layout (``fakehw.train.output.layouts``). Every event carries the story
clock's time, and the file is named as PyTorch's ``SummaryWriter`` names it
(``events.out.tfevents.<time>.<host>.<pid>.<n>``), with the host and PID of the rank
that writes it.
"""

from __future__ import annotations

import time
from pathlib import Path

from fakehw import TYPE_CHECKING
from fakehw.train.events import (
    EvalResult,
    GpuSample,
    ProbeResult,
    RunStart,
    StepMetrics,
    StepSample,
    Summary,
)
from fakehw.train.output.layouts.base import Layout, Scalar
from fakehw.train.recorder import Recorder

if TYPE_CHECKING:
    from tensorboardX.record_writer import RecordWriter

FLUSH_EVERY_WALL_S = 1.0  # a running tensorboard sees new points within a second


class EventFile:
    """One event file: scalars and text, each at a step and a (story) wall time."""

    def __init__(self, path: Path, wall_time: float) -> None:
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import RecordWriter

        self._event_pb2 = event_pb2
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer: RecordWriter = RecordWriter(str(path))
        self._flushed = time.monotonic()
        first = event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2")
        self._writer.write(first.SerializeToString())
        self.flush()

    def scalars(self, values: list[Scalar], wall_time: float) -> None:
        """Each as a simple value under its tag as given: ``tensorboardX.summary.scalar``
        would rewrite ``lm loss`` as ``lm_loss``; PyTorch's writer, which the
        frameworks use, keeps the name."""
        for tag, value, step in values:
            event = self._event_pb2.Event(wall_time=wall_time, step=step)
            event.summary.value.add(tag=tag, simple_value=float(value))
            self._writer.write(event.SerializeToString())
        if time.monotonic() - self._flushed >= FLUSH_EVERY_WALL_S:
            self.flush()

    def text(self, tag: str, content: str, step: int, wall_time: float) -> None:
        from tensorboardX.summary import text

        event = self._event_pb2.Event(wall_time=wall_time, step=step)
        event.summary.CopyFrom(text(tag, content))
        self._writer.write(event.SerializeToString())

    def flush(self) -> None:
        self._writer.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._writer.close()


class TensorBoardRecorder(Recorder):
    """The run's scalars in TensorBoard, under the tags its framework uses."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.file: EventFile | None = None
        self.start: RunStart | None = None
        self.opened = 0  # event files opened (the writer's index in their names)
        self.paths: list[Path] = []

    def _file(self, wall_time: float) -> EventFile | None:
        if self.file is None and self.start is not None:
            name = self.layout.event_file_name(self.start, wall_time, self.opened)
            path = self.layout.tensorboard_dir(self.start) / name
            self.file = EventFile(path, wall_time)
            self.paths.append(path)
            self.opened += 1
        return self.file

    def started(self, start: RunStart) -> None:
        self.start = start
        file = self._file(start.time)
        if file is not None:
            for tag, content in self.layout.text_summaries():
                file.text(tag, content, 0, start.time)
            file.flush()

    def _write(self, values: list[Scalar], wall_time: float, flush: bool = False) -> None:
        if not values:
            return
        file = self._file(wall_time)
        if file is not None:
            file.scalars(values, wall_time)
            if flush:
                file.flush()

    def step_taken(self, sample: StepSample) -> None:
        self._write(self.layout.every_step_scalars(sample), sample.time)

    def step(self, m: StepMetrics) -> None:
        self._write(self.layout.step_scalars(m) + self.layout.source_scalars(m), m.time)

    def gpus(self, sample: GpuSample) -> None:
        self._write(self.layout.gpu_scalars(sample), sample.time)

    def eval(self, r: EvalResult) -> None:
        self._write(self.layout.eval_scalars(r) + self.layout.eval_source_scalars(r), r.time,
                    flush=True)  # fmt: skip

    def probe(self, p: ProbeResult) -> None:
        self._write(self.layout.probe_scalars(p), p.time, flush=True)

    def training_ended(self, s: Summary) -> None:
        self._write(self.layout.final_scalars(s), s.time, flush=True)
        if self.layout.new_event_file_after_training:
            # HF's callback closes its writer when training ends; a later evaluate()
            # opens a new one: a second event file (``...<pid>.1``)
            self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.flush()
            self.file.close()
            self.file = None
