"""DeepSpeed's ``save_checkpoint`` directory and its monitor's TensorBoard.

``DIR/checkpoints/global_step1000/`` (model and ZeRO optimizer states, the style's
files) and ``latest`` beside them holding the tag (``global_step1000``, no newline);
every checkpoint is kept. The monitor writes to ``DIR/tensorboard/<job_name>/`` from
rank 0, at every optimizer step: ``Train/Samples/train_loss`` (that step's),
``Train/Samples/lr`` and, for fp16, ``Train/Samples/loss_scale``, each against the
samples consumed (the monitor's x axis); the validation as the Megatron-DeepSpeed
script the style prints logs it.
"""

from __future__ import annotations

from pathlib import Path

from fakehw.train.events import GpuSample, RunStart, StepMetrics, StepSample
from fakehw.train.output.layouts.base import Scalar
from fakehw.train.output.layouts.megatron import MegatronLayout


class DeepSpeedLayout(MegatronLayout):
    name = "deepspeed"
    checkpoint_pattern = r"global_step(\d+)"

    def tensorboard_rank(self) -> int:
        return 0

    def tensorboard_dir(self, start: RunStart) -> Path:
        return self.root / "tensorboard" / self.plan.run_name  # output_path / job_name

    def every_step_scalars(self, sample: StepSample) -> list[Scalar]:
        samples = sample.samples_seen
        values: list[Scalar] = [
            ("Train/Samples/train_loss", sample.loss, samples),
            ("Train/Samples/lr", sample.lr, samples),
        ]
        if sample.loss_scale is not None:
            values.append(("Train/Samples/loss_scale", sample.loss_scale, samples))
        return values

    def step_scalars(self, m: StepMetrics) -> list[Scalar]:
        return []

    def tensorboard_arg(self) -> str:
        return str(self.root / "tensorboard")  # the monitor's output_path

    def gpu_scalars(self, sample: GpuSample) -> list[Scalar]:
        return []

    def state_files(self, step: int) -> dict[str, bytes]:
        return {}

    def point(self, latest: int) -> None:
        self._write_pointer("latest", self.checkpoint_name(latest))

    def pointer_names(self) -> set[str]:
        return {"latest"}
