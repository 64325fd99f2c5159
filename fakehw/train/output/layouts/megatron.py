"""Megatron-LM's ``--save`` and ``--tensorboard-dir``.

``DIR/checkpoints/iter_0001000/`` in the torch_dist format (the style's files) and
``latest_checkpointed_iteration.txt`` beside them, holding the iteration (no newline,
as ``megatron.training.checkpointing`` writes it); every checkpoint is kept (Megatron
deletes none). TensorBoard from the last rank, in ``DIR/tensorboard/``, under
``training_log``'s tags with ``--log-timers-to-tensorboard``,
``--log-validation-ppl-to-tensorboard`` and ``--log-throughput``: at every iteration
(``--tensorboard-log-interval 1``, its default) ``learning-rate``, ``batch-size``,
``lm loss`` (that iteration's), ``loss-scale``, ``grad-norm``, each also ``... vs
samples`` (against consumed samples); at each ``--log-interval`` the interval's
``iteration-time`` and ``throughput``, as the log line prints them; and ``lm loss
validation`` (``ppl``: exp of the loss capped at 20, as it prints).
"""

from __future__ import annotations

import json
import math

from fakehw.train.events import EvalResult, GpuSample, StepMetrics, StepSample
from fakehw.train.output.layouts.base import Layout, Scalar

PPL_CAP = 20  # Megatron's math.exp(min(20, loss))


class MegatronLayout(Layout):
    name = "megatron"
    checkpoint_pattern = r"iter_(\d+)"
    keep_last = None
    keeps_best = False

    def logged_loss(self, m: StepMetrics) -> float:
        return m.interval_loss  # the mean over the logging interval

    def tensorboard_rank(self) -> int:
        return self.plan.gpus - 1

    def text_summaries(self) -> list[tuple[str, str]]:
        return []  # Megatron writes its arguments to the log, not to TensorBoard

    @staticmethod
    def _with_samples(tag: str, value: float, step: int, samples: int) -> list[Scalar]:
        return [(tag, value, step), (f"{tag} vs samples", value, samples)]

    def every_step_scalars(self, sample: StepSample) -> list[Scalar]:
        step, samples = sample.step, sample.samples_seen
        return [
            *self._with_samples("learning-rate", sample.lr, step, samples),
            *self._with_samples("batch-size", sample.global_batch, step, samples),
            *self._with_samples("lm loss", sample.loss, step, samples),
            *self._with_samples("loss-scale", sample.loss_scale or 1.0, step, samples),
            *self._with_samples("grad-norm", sample.grad_norm, step, samples),
        ]

    def step_scalars(self, m: StepMetrics) -> list[Scalar]:
        return [
            ("iteration-time", m.interval_step_s, m.step),
            ("throughput", m.interval_tflops_per_gpu, m.step),
        ]

    def gpu_scalars(self, sample: GpuSample) -> list[Scalar]:
        return []

    def eval_scalars(self, r: EvalResult) -> list[Scalar]:
        samples = r.step * self.plan.global_batch
        ppl = math.exp(min(PPL_CAP, r.loss))
        return [
            *self._with_samples("lm loss validation", r.loss, r.step, samples),
            *self._with_samples("lm loss validation ppl", ppl, r.step, samples),
        ]

    def state_files(self, step: int) -> dict[str, bytes]:
        metadata = {
            "sharded_backend": "torch_dist",
            "sharded_backend_version": 1,
            "common_backend": "torch",
            "common_backend_version": 1,
        }
        return {"metadata.json": json.dumps(metadata).encode()}

    def removal_line(self, path: str) -> str:
        return ""

    def point(self, latest: int) -> None:
        self._write_pointer("latest_checkpointed_iteration.txt", str(latest))

    def _write_pointer(self, name: str, text: str) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        partial = self.checkpoints / f".{name}.partial"
        partial.write_text(text)
        partial.replace(self.checkpoints / name)

    def pointer_names(self) -> set[str]:
        return {"latest_checkpointed_iteration.txt"}
