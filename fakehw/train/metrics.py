"""``--metrics-jsonl PATH``: one JSON object per logged step, eval and checkpoint.

Schema (DESIGN.md; every key in docs/train-metrics.md): steps carry ``step, epoch,
tokens_seen, loss, ppl, lr, grad_norm, tokens_per_s, samples_per_s, step_time_s,
elapsed_s, eta_s, tflops_per_gpu, mfu, gpus, global_batch_tokens, params``
(``params``: active per token; ``ppl``: null for DPO) and the step's split,
``compute_s, exposed_comm_s, bubble_fraction``; ``{"event": "eval", ...}`` and
``{"event": "checkpoint", "path", "bytes", ...}`` mark the other events, and
``{"event": "gpus", "power_w", "temp_c", ...}`` gives the job's GPUs (means over them,
as the daemon reports them) at each logged step. Lines are
flushed as they are written, so a reader can follow the file live.
"""

from __future__ import annotations

import json
from typing import TextIO

from fakehw.train.events import (
    BenchmarkReport,
    CheckpointInfo,
    EarlyStop,
    EpochSummary,
    EvalResult,
    GpuSample,
    GradientReport,
    Incident,
    ProbeResult,
    QuantizeResult,
    StepMetrics,
)
from fakehw.train.recorder import Recorder


class MetricsWriter(Recorder):
    def __init__(self, path: str | None, append: bool = False) -> None:
        """``append``: a resumed run goes on where the earlier run's file ends."""
        self.path = path
        self._file: TextIO | None = None
        if path:
            self._file = open(path, "a") if append else open(path, "w")  # noqa: SIM115

    def _write(self, record: dict[str, object]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def step(self, m: StepMetrics) -> None:
        record: dict[str, object] = {
            "step": m.step,
            "epoch": round(m.epoch_fraction, 6),
            "tokens_seen": m.tokens_seen,
            "loss": m.loss,
            "interval_loss": m.interval_loss,
            "ppl": m.ppl,
            "lr": m.lr,
            "grad_norm": m.grad_norm,
            "tokens_per_s": m.tokens_per_s,
            "samples_per_s": m.samples_per_s,
            "step_time_s": m.step_time_s,
            "interval_step_time_s": m.interval_step_s,
            "elapsed_s": m.elapsed_s,
            "eta_s": m.eta_s,
            "tflops_per_gpu": m.tflops_per_gpu,
            "mfu": m.mfu,
            "gpus": m.gpus,
            "global_batch_tokens": m.global_batch_tokens,
            "params": m.params,
            "time": m.time,
            # the step's time as the performance model breaks it down
            "compute_s": m.compute_s,
            "exposed_comm_s": m.exposed_comm_s,
            "bubble_fraction": m.bubble_fraction,
        }
        if m.loss_scale is not None:
            record["loss_scale"] = m.loss_scale
            record["skipped_steps"] = m.skipped_steps
        record["clip_rate"] = m.clip_rate
        record["clip_coef"] = m.clip_coef
        if m.layer_grad_norms:
            record["grad_norm_layers"] = dict(m.layer_grad_norms)
        if m.sources:  # --mixture
            record["samples_seen"] = m.samples_seen
            record["sources"] = [
                {"name": s.name, "loss": s.loss, "samples": s.samples, "samples_seen": seen}
                for s, seen in zip(m.sources, m.sources_seen, strict=True)
            ]
        record.update(m.extra)
        self._write(record)

    def probe(self, p: ProbeResult) -> None:
        record: dict[str, object] = {"event": "probe", "step": p.step, "tokens": p.tokens}
        record.update({k: v for k, v in p.values().items() if not k.startswith("layer_")})
        record["topk"] = p.topk
        record["vocab"] = p.vocab
        record["layers"] = [
            {
                "layer": layer.layer,
                "cosine_sim_intra": layer.cosine_sim_intra,
                "cosine_sim_inter": layer.cosine_sim_inter,
                "participation_ratio": layer.participation_ratio,
            }
            for layer in p.layers
        ]
        record["hidden"] = p.hidden
        record["runtime_s"] = p.runtime_s
        record["time"] = p.time
        self._write(record)

    def incident(self, i: Incident) -> None:
        self._write({"event": "incident", "kind": i.kind, "step": i.step, "time": i.time,
                     **i.details})  # fmt: skip

    def early_stop(self, e: EarlyStop) -> None:
        self._write(
            {
                "event": "early_stop",
                "step": e.step,
                "metric": e.metric,
                "value": e.last,
                "best": e.best,
                "best_step": e.best_step,
                "best_path": e.best_path,
                "patience": e.patience,
                "time": e.time,
            }
        )

    def epoch_end(self, e: EpochSummary) -> None:
        self._write(
            {
                "event": "epoch",
                "epoch": e.epoch,
                "step": e.step,
                "steps": e.steps,
                "train_loss": e.train_loss,
                "tokens": e.tokens,
                "seconds": e.seconds,
                "val_loss": e.val_loss,
                "best_val_loss": e.best_val_loss,
                "best_step": e.best_step,
                "next_lr": e.lr,
                "time": e.time,
            }
        )

    def gradients(self, g: GradientReport) -> None:
        self._write(
            {
                "event": "gradients",
                "step": g.step,
                "grad_norm": g.grad_norm,
                "layers": dict(g.layers),
                "steps": g.steps,
                "clipped": g.clipped,
                "clip_rate": g.clip_rate,
                "clip_coef": g.clip_coef,
                "max_norm": g.max_norm,
                "time": g.time,
            }
        )

    def eval(self, r: EvalResult) -> None:
        self._write(
            {
                "event": "eval",
                "step": r.step,
                "loss": r.loss,
                "ppl": r.ppl,
                "samples": r.samples,
                "runtime_s": r.runtime_s,
                "tokens_per_s": r.tokens_per_s,
                "final": r.final,
                "time": r.time,
                **r.extra,
                **(
                    {
                        "sources": [
                            {"name": s.name, "loss": s.loss, "samples": s.samples}
                            for s in r.sources
                        ]
                    }
                    if r.sources
                    else {}
                ),
            }
        )

    def quantized(self, q: QuantizeResult) -> None:
        self._write(
            {
                "event": "quantize",
                "step": q.step,
                "method": q.method,
                "calibration_samples": q.calibration_samples,
                "calibration_tokens": q.calibration_tokens,
                "val_loss_before": q.val_loss_before,
                "val_loss_after": q.val_loss_after,
                "bytes_before": q.bytes_before,
                "bytes_after": q.bytes_after,
                "seconds": q.seconds,
                "time": q.time,
            }
        )

    def benchmarks(self, b: BenchmarkReport) -> None:
        self._write(
            {
                "event": "benchmarks",
                "step": b.step,
                "model": b.model,
                "model_args": b.model_args,
                "results": [
                    {
                        "task": r.task,
                        "version": r.version,
                        "filter": r.filter,
                        "shots": r.shots,
                        "metric": r.metric,
                        "value": r.value,
                        "stderr": r.stderr,
                    }
                    for r in b.rows
                ],
                "time": b.time,
            }
        )

    def gpus(self, sample: GpuSample) -> None:
        self._write(
            {
                "event": "gpus",
                "step": sample.step,
                "power_w": sample.power_w_mean,
                "power_w_max": sample.power_w_max,
                "temp_c": sample.temp_c_mean,
                "temp_c_max": sample.temp_c_max,
                "sm_clock_mhz": sample.sm_clock_mhz_mean,
                "memory_used_gib": sample.memory_used_gib_mean,
                "util": sample.util_mean,
                "time": sample.time,
            }
        )

    def checkpoint(self, c: CheckpointInfo) -> list[str]:
        self._write(
            {
                "event": "checkpoint",
                "step": c.step,
                "path": c.path,
                "bytes": c.bytes,
                "files": len(c.files),
                "seconds": c.seconds,
                "reason": c.reason,
                "time": c.time,
            }
        )
        return []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
