"""``DIR/run.json``: the run in one file. Written as the run starts (its config and
plan, ``"status": "running"``) and rewritten when it ends (the final figures, the
checkpoints kept, every file the run left with its apparent size and what it uses on
disk), each time whole (a reader never finds half of it)."""

from __future__ import annotations

import json

from fakehw.train.events import CheckpointInfo, EvalResult, ExportArtifact, RunStart, Summary
from fakehw.train.output.files import FileWriter, entries, usage
from fakehw.train.output.layouts.base import Layout
from fakehw.train.plan import RunPlan
from fakehw.train.recorder import Recorder

FORMAT_VERSION = 1


class RunFile(Recorder):
    def __init__(self, plan: RunPlan, layout: Layout, files: FileWriter) -> None:
        self.plan = plan
        self.layout = layout
        self.files = files
        self.path = layout.root / "run.json"
        self.evals: list[dict[str, object]] = []
        self.saved: list[dict[str, object]] = []
        self.exports: list[dict[str, object]] = []
        self.record: dict[str, object] = {}

    def describe(self) -> dict[str, object]:
        plan = self.plan
        return {
            "format_version": FORMAT_VERSION,
            "run_name": plan.run_name,
            "style": plan.style,
            "output_dir": str(self.layout.root),
            "config": {
                "task": plan.task,
                "model": plan.model.name,
                "dataset": plan.dataset.name,
                "gpu_model": plan.gpu.name,
                "nodes": plan.nodes,
                "gpus_per_node": plan.gpus_per_node,
                "precision": plan.precision,
                "seed": plan.seed,
            },
            "plan": {
                "params": plan.params,
                "active_params": plan.active_params,
                "trainable_params": plan.trainable,
                "tp": plan.par.tp,
                "pp": plan.par.pp,
                "dp": plan.par.dp,
                "zero_stage": plan.par.zero_stage,
                "micro_batch": plan.par.micro_batch,
                "grad_accum": plan.par.grad_accum,
                "global_batch": plan.global_batch,
                "seq": plan.seq,
                "tokens_per_step": plan.tokens_per_step,
                "total_steps": plan.total_steps,
                "steps_per_epoch": plan.steps_per_epoch,
                "warmup_steps": plan.warmup_steps,
                "peak_lr": plan.peak_lr,
                "schedule": plan.schedule,
                "eval_every": plan.eval_every,
                "checkpoint_every": plan.checkpoint_every,
                "log_interval": plan.log_interval,
                "start_step": plan.start_step,
                "step_s": plan.step_s,
                "mfu": plan.mfu,
                "memory_gib_per_gpu": plan.memory_mib / 1024,
                "checkpoint_bytes": plan.checkpoint_bytes,
            },
            "paths": {
                "checkpoints": str(self.layout.checkpoints),
                "logs": str(self.layout.logs),
                "metrics": str(self.layout.root / "metrics.jsonl"),
            },
        }

    def _write(self) -> None:
        self.files.write_text(self.path, json.dumps(self.record, indent=2) + "\n")

    def started(self, start: RunStart) -> None:
        self.record = {**self.describe(), "status": "running", "started": start.time}
        self.record["paths"]["tensorboard"] = str(self.layout.tensorboard_dir(start))  # type: ignore[index]
        self._write()

    def eval(self, r: EvalResult) -> None:
        self.evals.append({"step": r.step, "loss": r.loss, "ppl": r.ppl, "final": r.final})

    def checkpoint(self, c: CheckpointInfo) -> list[str]:
        self.saved.append({"step": c.step, "path": c.path, "bytes": c.bytes, "reason": c.reason})
        return []

    def removed(self, paths: list[str], time: float) -> None:
        gone = set(paths)
        self.saved = [entry for entry in self.saved if entry["path"] not in gone]

    def export(self, a: ExportArtifact) -> None:
        self.exports.append({"format": a.format, "detail": a.detail, "path": a.path,
                             "bytes": sum(size for _, size in a.files)})  # fmt: skip

    def failed(self, lines: list[str], time: float) -> None:
        self.record.update({"status": "failed", "ended": time, "error": lines})
        self._finish()

    def close(self) -> None:
        """A run that ended without a word (SIGTERM, SIGHUP): said so, not "running"."""
        if self.record.get("status") == "running":
            self.record["status"] = "stopped"
            self._finish()

    def _finish(self) -> None:
        listed = entries(self.layout.root)
        count, apparent, on_disk = usage(listed)
        self.record.update(
            {
                "evals": self.evals,
                "checkpoints": self.saved,
                "exports": self.exports,
                "disk": {
                    "files": count,
                    "apparent_bytes": apparent,
                    "on_disk_bytes": on_disk,
                    "sparse_files": self.files.sparse_ok is not False,
                },
                # every file (symlinks aside) with its apparent size and disk use
                "files": [
                    {"path": e.path, "bytes": e.bytes, "on_disk": e.on_disk}
                    for e in listed
                    if not e.link
                ],
            }
        )
        self._write()

    def finished(self, s: Summary) -> None:
        best = self.layout.best_step
        self.record.update(
            {
                "status": s.outcome,
                "ended": s.time,
                "final": {
                    "steps": s.steps,
                    "tokens": s.tokens,
                    "train_loss": s.final_loss,
                    "mean_train_loss": s.mean_loss,
                    "val_loss": s.final_eval_loss,
                    "wall_s": s.wall_s,
                    "train_s": s.train_s,
                },
                "best_checkpoint": None
                if best is None
                else str(self.layout.checkpoints / self.layout.checkpoint_name(best)),
            }
        )
        self._finish()
