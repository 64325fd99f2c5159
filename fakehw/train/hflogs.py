"""The dicts Hugging Face's Trainer logs: at each logging step, at each evaluation
and at the end of training. One source for the HF style (which prints them), the
TensorBoard tags its callback writes (``train/loss``, ``eval/loss``...) and
``trainer_state.json``'s ``log_history``, so the three never disagree.

Values are floats as Trainer holds them: losses and gradient norms are float32
tensors' ``.item()``, so they carry float32's precision (``10.46927719116211``).
"""

from __future__ import annotations

import struct

from fakehw.train.events import EvalResult, ProbeResult, StepMetrics, Summary
from fakehw.train.plan import RunPlan


def float32(value: float) -> float:
    """A float32 tensor's ``.item()``: the value rounded to float32."""
    packed: float = struct.unpack("f", struct.pack("f", value))[0]
    return packed


def train_logs(m: StepMetrics) -> dict[str, float]:
    logs = {
        "loss": float32(m.interval_loss),
        "grad_norm": float32(m.grad_norm),
        "learning_rate": m.lr,
    }
    logs.update(m.extra)
    logs["epoch"] = m.epoch_fraction
    return logs


def eval_logs(r: EvalResult, steps_per_epoch: int) -> dict[str, float]:
    logs = {"eval_loss": float32(r.loss)}
    logs.update(r.extra)
    logs.update(
        {
            "eval_runtime": round(r.runtime_s, 4),
            "eval_samples_per_second": round(r.samples / r.runtime_s, 3),
            "eval_steps_per_second": round(max(1, r.batches) / r.runtime_s, 3),
            "epoch": r.step / steps_per_epoch,
        }
    )
    return logs


def probe_logs(p: ProbeResult, plan: RunPlan) -> dict[str, float]:
    """A probe callback's ``trainer.log({...})``: ``probe/`` names (TensorBoardCallback
    then writes them as ``train/probe/...``), ``epoch`` added by the Trainer."""
    logs = {f"probe/{name}": value for name, value in p.values().items()}
    logs["epoch"] = p.step / plan.steps_per_epoch
    return logs


def final_logs(s: Summary, plan: RunPlan) -> dict[str, float]:
    """``trainer.train()``'s closing metrics (``train_runtime``...). ``total_flos`` as
    Trainer counts it: 6 x the parameters but the input embeddings x the tokens."""
    runtime = max(s.train_s, 1e-3)
    return {
        "train_runtime": round(runtime, 4),
        "train_samples_per_second": round(s.steps_run * plan.global_batch / runtime, 3),
        "train_steps_per_second": round(s.steps_run / runtime, 3),
        "total_flos": float(total_flos(plan, s.steps)),
        "train_loss": s.mean_loss if s.mean_loss is not None else (s.final_loss or 0.0),
        "epoch": s.steps / plan.steps_per_epoch,
    }


def total_flos(plan: RunPlan, steps: int) -> int:
    arch = plan.model.arch
    counted = plan.params - arch.vocab * arch.hidden  # the input embeddings are left out
    return 6 * counted * steps * plan.tokens_per_step
