"""The batch-size manager: a training step that runs out of GPU memory is caught, the
micro-batch halved and gradient accumulation doubled (the global batch, and so the
optimisation, unchanged), and the step tried again; at a micro-batch of one,
activation checkpointing is switched on (each layer's activations recomputed in the
backward pass: far less memory, a third more compute). What each layout holds and
costs comes from the same arithmetic as the plan (``plan.relayout``), so the log's
memory, step time, tokens/s and MFU, and the GPUs' memory, follow the change.

What runs a step out of memory: another job on the same GPUs (at the start, the
memory free is what the others leave), or a batch that needs more than the plan
allowed for (``--inject oom:RANK@STEP``: on that rank, a batch of long unpacked
documents whose attention and logits need more activation memory than the GPU has
left, by ``OVERSHOOT`` of the planned activations; the extra scales with the
micro-batch, so a smaller one fits).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fakehw.train import arithmetic as ar
from fakehw.train import torchrun
from fakehw.train.plan import RunPlan, relayout

if TYPE_CHECKING:
    from fakehw.train.engine import Engine

OVERSHOOT = 0.1  # an injected out-of-memory batch: this share of the activations too many
MIB = 1024**2


class DoesNotFit(Exception):
    """Not even a micro-batch of one with recomputation fits."""


def smaller(par: ar.Parallelism) -> ar.Parallelism | None:
    """The manager's next layout: half the micro-batch (twice the accumulation), else
    recomputation; None when both are spent."""
    if par.micro_batch > 1:
        return replace(par, micro_batch=par.micro_batch // 2, grad_accum=par.grad_accum * 2)
    if not par.recompute:
        return replace(par, recompute=True)
    return None


def need_bytes(memory: dict[str, int], spike: float) -> int:
    """What a step asks of the allocator at its peak: the reserved memory, and a bad
    batch's extra activations (``spike`` times the layout's)."""
    return ar.reserved_bytes(memory) + int(spike * memory["activations"])


def layouts_until_fit(plan: RunPlan, free_bytes: int, spike: float = 0.0) -> list[ar.Parallelism]:
    """The layouts the manager goes through, each after an OOM, until one fits in
    ``free_bytes``: [] when the plan's already fits."""
    found: list[ar.Parallelism] = []
    par, memory = plan.par, plan.memory
    while need_bytes(memory, spike) > free_bytes:
        step = smaller(par)
        if step is None:
            raise DoesNotFit
        par = step
        memory = relayout(plan, par)[0]
        found.append(par)
    return found


class BatchSizeManager:
    """The engine's side: an out-of-memory step caught, the layout changed, the step
    tried again, the GPUs' memory following."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def out_of_memory(self, rank: int, free_bytes: int, spike: float, cause: str,
                      others: list[tuple[int, float]] | None = None) -> None:  # fmt: skip
        """A step on ``rank`` needs more than ``free_bytes``: each layout the manager
        tries fails with PyTorch's OOM until one fits. Raises DoesNotFit when none does
        (the caller fails the job as PyTorch would)."""
        engine = self.engine
        plan = engine.plan
        layouts = layouts_until_fit(plan, free_bytes, spike)
        if not layouts:
            return
        step = engine.step + 1
        for par in layouts:
            self.tell_oom(rank, free_bytes, spike, others or [])
            before_par, before_memory, before_step_s = plan.par, plan.memory, plan.step_s
            plan.par = par
            plan.memory, plan.performance = relayout(plan, par)
            engine.wait(0.5 * before_step_s)  # the step got this far before it failed
            engine.incident(
                "oom",
                rank=rank,
                cause=cause,
                micro_from=before_par.micro_batch,
                micro_to=par.micro_batch,
                accum_from=before_par.grad_accum,
                accum_to=par.grad_accum,
                recompute=par.recompute and not before_par.recompute,
                global_batch=plan.global_batch,
                seq=plan.seq,
                reserved_from_gib=ar.reserved_bytes(before_memory) / 1024**3,
                reserved_to_gib=ar.reserved_bytes(plan.memory) / 1024**3,
                activations_from_gib=before_memory["activations"] / 1024**3,
                activations_to_gib=plan.memory["activations"] / 1024**3,
                step_s_from=before_step_s,
                step_s_to=plan.step_s,
                retry_step=step,
            )
        engine.monitor.relayout()
        # torch.cuda.empty_cache(): the cached blocks of the failed layout go back
        engine.world.phase("free")
        engine.world.replan(engine.memory_plan())
        engine.world.phase("train", cycle_s=engine.expected_step_time())

    def usable_bytes(self) -> int:
        """What a rank may hold on its GPU beside its CUDA context."""
        gpu = self.engine.plan.gpu
        return (gpu.memory_usable_mib - gpu.context_mib) * MIB

    def injected(self, rank: int) -> None:
        """``--inject oom:RANK@STEP``: the next batch on ``rank`` needs more than is left."""
        plan = self.engine.plan
        free = self.usable_bytes()
        headroom = free - ar.reserved_bytes(plan.memory)
        spike = max(0, headroom) / plan.memory["activations"] + OVERSHOOT
        self.out_of_memory(rank, free, spike, "a batch larger than planned")

    def tell_oom(self, rank: int, free_bytes: int, spike: float,
                 others: list[tuple[int, float]]) -> None:  # fmt: skip
        """PyTorch's error, as the rank's log shows it where the manager caught it: in
        training the rank's cache holds its reserved memory and the bad batch asks for
        more; at the first step it holds its states and asks for its activations."""
        plan, gib = self.engine.plan, 1024**3
        memory = plan.memory
        context = plan.gpu.context_mib * MIB
        training = self.engine.steps_since_start > 0
        allocated = sum(memory.values()) - (0 if training else memory["activations"])
        held = ar.reserved_bytes(memory) if training else int(allocated * ar.ALLOCATOR_SLACK)
        wanted = need_bytes(memory, spike) - held
        total = (plan.gpu.memory_total_mib - plan.gpu.memory_reserved_mib) * MIB
        free = max(0, free_bytes - held)
        lines = torchrun.step_out_of_memory(
            rank, wanted / gib, total / gib, free / gib, (held + context) / gib, allocated / gib,
            (held - allocated) / gib, others,
        )  # fmt: skip
        self.engine.style.rank_failure(lines)
