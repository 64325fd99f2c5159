"""DeepSpeed's ``save_checkpoint`` directory and its monitor's TensorBoard.

``DIR/checkpoints/global_step1000/`` (model and ZeRO optimizer states, the style's
files) and ``latest`` beside them holding the tag (``global_step1000``, no newline);
every checkpoint is kept. The monitor writes to ``DIR/tensorboard/<job_name>/`` from
rank 0: ``Train/Samples/train_loss``, ``Train/Samples/lr`` and, for fp16,
``Train/Samples/loss_scale``, each against the samples consumed (the monitor's x
axis); the validation as the Megatron-DeepSpeed script the style prints logs it.
"""

from __future__ import annotations

from pathlib import Path

from fakehw.train.events import GpuSample, RunStart, StepMetrics
from fakehw.train.output.layouts.base import Scalar
from fakehw.train.output.layouts.megatron import MegatronLayout


class DeepSpeedLayout(MegatronLayout):
    name = "deepspeed"
    checkpoint_pattern = r"global_step(\d+)"

    def tensorboard_rank(self) -> int:
        return 0

    def tensorboard_dir(self, start: RunStart) -> Path:
        return self.root / "tensorboard" / self.plan.run_name  # output_path / job_name

    def step_scalars(self, m: StepMetrics) -> list[Scalar]:
        values: list[Scalar] = [
            ("Train/Samples/train_loss", m.interval_loss, m.samples_seen),
            ("Train/Samples/lr", m.lr, m.samples_seen),
        ]
        if m.loss_scale is not None:
            values.append(("Train/Samples/loss_scale", m.loss_scale, m.samples_seen))
        return values

    def gpu_scalars(self, sample: GpuSample) -> list[Scalar]:
        return []

    def state_files(self, step: int) -> dict[str, bytes]:
        return {}

    def point(self, latest: int) -> None:
        self._write_pointer("latest", self.checkpoint_name(latest))

    def pointer_names(self) -> set[str]:
        return {"latest"}
