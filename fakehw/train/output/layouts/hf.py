"""Hugging Face Trainer's output directory, as ``tests/real/hf-trainer/`` shows it.

``DIR/checkpoint-N/`` (weights, ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
``trainer_state.json``, ``training_args.bin``, ``config.json``,
``generation_config.json``), ``DIR/runs/<Mon DD_HH-MM-SS>_<host>/events.out.tfevents...``
with the TensorBoard callback's tags (``train/loss``, ``train/grad_norm``,
``train/learning_rate``, ``train/epoch``, ``eval/loss``, ``eval/runtime``...), and a
second event file for the ``evaluate()`` after training (the callback closed its
writer when training ended). ``save_total_limit=2`` and ``metric_for_best_model=
"eval_loss"``: every evaluation updates ``best_metric`` and ``best_global_step`` when it
is the lowest yet (``Trainer._determine_best_metric``); a save makes
``best_model_checkpoint`` the best step's checkpoint if that one exists (a best
evaluation between saves has none); older checkpoints are deleted as
``Trainer._rotate_checkpoints`` does it, ``best_model_checkpoint`` kept. The best model
is not loaded at the end (``load_best_model_at_end`` is off), so the final
``evaluate()`` scores the trained model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fakehw.train import hflogs
from fakehw.train.events import (
    EvalResult,
    GpuSample,
    ProbeResult,
    RunStart,
    StepMetrics,
    Summary,
)
from fakehw.train.output import hfconfig
from fakehw.train.output.layouts.base import Layout, Scalar
from fakehw.train.plan import RunPlan

SAVE_TOTAL_LIMIT = 2


class HfLayout(Layout):
    name = "hf"
    checkpoint_pattern = r"checkpoint-(\d+)"
    keep_last = SAVE_TOTAL_LIMIT
    new_event_file_after_training = True

    def __init__(self, plan: RunPlan, root: Path, checkpoint_name: Callable[[int], str]) -> None:
        super().__init__(plan, root, checkpoint_name)
        self.log_history: list[dict[str, float | int]] = []
        self.best_metric: float | None = None  # the lowest eval_loss yet (float32)
        self.best_global_step: int | None = None  # the step it was evaluated at
        # best_step (the base's): the step of best_model_checkpoint, which rotation keeps

    @property
    def checkpoints(self) -> Path:
        return self.root

    def logged_loss(self, m: StepMetrics) -> float:
        return m.interval_loss  # the mean over logging_steps

    def tensorboard_arg(self) -> str:
        return str(self.root / "runs")  # logging_dir's parent: one directory per run

    def tensorboard_dir(self, start: RunStart) -> Path:
        began = datetime.fromtimestamp(start.time).strftime("%b%d_%H-%M-%S")
        return self.root / "runs" / f"{began}_{start.hostnames[0]}"

    # ------------------------------------------------------ what it logs
    def _tags(self, logs: dict[str, float], step: int) -> list[Scalar]:
        """``TensorBoardCallback.on_log``: ``eval_x`` as ``eval/x``, the rest ``train/x``."""
        return [
            (f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}", value, step)
            for key, value in logs.items()
        ]

    def step_scalars(self, m: StepMetrics) -> list[Scalar]:
        return self._tags(hflogs.train_logs(m), m.step)

    def gpu_scalars(self, sample: GpuSample) -> list[Scalar]:
        return []  # Trainer's callback logs no GPU readings

    def gradient_scalars(self, m: StepMetrics) -> list[Scalar]:
        return []  # the Trainer logs the global grad_norm only

    def probe_scalars(self, p: ProbeResult) -> list[Scalar]:
        return self._tags(hflogs.probe_logs(p, self.plan), p.step)

    def eval_scalars(self, r: EvalResult) -> list[Scalar]:
        return self._tags(hflogs.eval_logs(r, self.plan.steps_per_epoch), r.step)

    def final_scalars(self, s: Summary) -> list[Scalar]:
        if s.final_loss is None:
            return []
        return self._tags(hflogs.final_logs(s, self.plan), s.steps)

    def text_summaries(self) -> list[tuple[str, str]]:
        return [
            ("args", json.dumps(self.training_args(), indent=2)),
            (
                "model_config",
                json.dumps(hfconfig.model_config(self.plan.model.arch), indent=2) + "\n",
            ),
        ]

    def training_args(self) -> dict[str, object]:
        """The TrainingArguments the run stands for (``args/text_summary``)."""
        plan = self.plan
        return {
            "output_dir": str(self.root),
            "per_device_train_batch_size": plan.par.micro_batch,
            "gradient_accumulation_steps": plan.par.grad_accum,
            "num_train_epochs": plan.epochs,
            "max_steps": plan.total_steps,
            "learning_rate": plan.peak_lr,
            "lr_scheduler_type": plan.schedule,
            "warmup_steps": plan.warmup_steps,
            "bf16": plan.precision == "bf16",
            "fp16": plan.precision == "fp16",
            "logging_steps": plan.log_interval,
            "eval_strategy": "steps",
            "eval_steps": plan.eval_every,
            "save_strategy": "steps",
            "save_steps": plan.checkpoint_every,
            "save_total_limit": self.keep_last,
            "load_best_model_at_end": False,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
            "report_to": ["tensorboard"],
            "seed": plan.seed % 2**32,
        }

    # ------------------------------------------------------- checkpoints
    def observe_step(self, m: StepMetrics) -> None:
        super().observe_step(m)
        self.log_history.append({**hflogs.train_logs(m), "step": m.step})

    def observe_eval(self, r: EvalResult) -> None:
        super().observe_eval(r)
        logs = hflogs.eval_logs(r, self.plan.steps_per_epoch)
        self.log_history.append({**logs, "step": r.step})
        if self.best_metric is None or logs["eval_loss"] < self.best_metric:
            self.best_metric, self.best_global_step = logs["eval_loss"], r.step

    def saved(self, step: int) -> None:
        """``_save_checkpoint``: the best step's checkpoint becomes best_model_checkpoint
        once it exists (it is this one when the best evaluation came with this save)."""
        if self.best_global_step == step:
            self.best_step, self.best_loss = step, self.best_metric

    def observe_final(self, s: Summary) -> None:
        if s.final_loss is not None:
            self.log_history.append({**hflogs.final_logs(s, self.plan), "step": s.steps})

    def restore(self, state: dict[str, object]) -> None:
        """``resume_from_checkpoint``: Trainer loads the checkpoint's trainer state, its
        log history and best model among it."""
        history = state.get("log_history")
        self.log_history = list(history) if isinstance(history, list) else []
        metric, step = state.get("best_metric"), state.get("best_global_step")
        self.best_metric = float(metric) if isinstance(metric, int | float) else None
        self.best_global_step = step if isinstance(step, int) else None
        best = state.get("best_model_checkpoint")
        found = re.search(self.checkpoint_pattern + "$", best) if isinstance(best, str) else None
        self.best_step = int(found[1]) if found else None
        self.best_loss = self.best_metric
        self.evals = {int(e["step"]): float(e["eval_loss"]) for e in self.log_history
                      if "eval_loss" in e}  # fmt: skip

    def trainer_state(self, step: int) -> dict[str, object]:
        """``TrainerState`` as ``save_to_json`` writes it into a checkpoint."""
        plan = self.plan
        best = None
        if self.best_step is not None:
            best = str(self.root / self.checkpoint_name(self.best_step))
        return {
            "best_global_step": self.best_global_step,
            "best_metric": self.best_metric,
            "best_model_checkpoint": best,
            "epoch": step / plan.steps_per_epoch,
            "eval_steps": plan.eval_every,
            "global_step": step,
            "is_hyper_param_search": False,
            "is_local_process_zero": True,
            "is_world_process_zero": True,
            "log_history": [entry for entry in self.log_history if entry["step"] <= step],
            "logging_steps": plan.log_interval,
            "max_steps": plan.total_steps,
            "num_input_tokens_seen": 0,
            "num_train_epochs": plan.epochs,
            "save_steps": plan.checkpoint_every,
            "stateful_callbacks": {
                "TrainerControl": {
                    "args": {
                        "should_epoch_stop": False,
                        "should_evaluate": False,
                        "should_log": False,
                        "should_save": True,
                        "should_training_stop": step >= plan.total_steps,
                    },
                    "attributes": {},
                }
            },
            "total_flos": float(hflogs.total_flos(plan, step)),
            "train_batch_size": plan.par.micro_batch,
            "trial_name": None,
            "trial_params": None,
        }

    def state_files(self, step: int) -> dict[str, bytes]:
        return {
            "trainer_state.json": hfconfig.dumps(self.trainer_state(step)),
            **hfconfig.model_files(self.plan.model.arch),
        }

    def retention(self, kept: list[int]) -> list[int]:
        """``Trainer._rotate_checkpoints``: the best checkpoint moves to the second-newest
        place (so it survives), a limit of 1 becomes 2 while the best is not the newest,
        and the oldest beyond the limit go."""
        order = list(kept)
        if self.best_step in order:
            for i in range(order.index(self.best_step), len(order) - 2):
                order[i], order[i + 1] = order[i + 1], order[i]
        limit = SAVE_TOTAL_LIMIT
        if self.best_step is not None and limit == 1 and order[-1] != self.best_step:
            limit = 2
        return order[: max(0, len(order) - limit)]

    def removal_line(self, path: str) -> str:
        return f"Deleting older checkpoint [{path}] due to args.save_total_limit"

    def point(self, latest: int) -> None:
        """Trainer keeps no pointer files: the newest ``checkpoint-N`` is the latest."""

    def pointer_names(self) -> set[str]:
        return set()
