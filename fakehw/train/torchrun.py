"""What PyTorch and its launcher print when a job's ranks fail: the rank's own
error, torchrun's (``torch.distributed.elastic``) verdict on the worker group, its
restart, and a job that runs out of attempts or finds a GPU gone.

Plain functions of plain values, as ``nccl.py`` is for NCCL: the engine decides what
happens (which rank died, of what, how many restarts are left) and these give it the
words, in the glog form torchrun uses (``E1201 23:28:55.512000 4711 torch/...py:882]``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

ELASTIC = "torch/distributed/elastic"
CHILD_FAILED = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError"
MASTER_PORT = 29500
KERNEL_NOTE = (
    "CUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect."
)


def glog(level: str, when: float, fraction: str, pid: int, where: str) -> str:
    """The prefix of a glog line: level, date, time, pid, source (``E1201 23:28:55.512000
    4711 torch/distributed/elastic/...:882]``)."""
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(when))
    return f"{level}{stamp}.{fraction} {pid} {where}]"


def child_failed(when: float, pid: int, rank: int, child_pid: int | None, binary: str,
                 exitcode: int, fraction: str = "512000") -> str:  # fmt: skip
    """torchrun's line for a worker that exited (-9: killed; 1: an error)."""
    child = f" (pid: {child_pid})" if child_pid else ""
    return (
        f"{glog('E', when, fraction, pid, f'{ELASTIC}/multiprocessing/api.py:882')} failed "
        f"(exitcode: {exitcode}) local_rank: {rank}{child} of binary: {binary}"
    )


def cuda_error(rank: int, error: str, statement: str = "loss.backward()") -> list[str]:
    """A rank's traceback when a CUDA call fails under it (an XID: the GPU's fault)."""
    return [
        f"[rank{rank}]: Traceback (most recent call last):",
        f"[rank{rank}]:     {statement}",
        f"[rank{rank}]: RuntimeError: CUDA error: {error}",
        f"[rank{rank}]: {KERNEL_NOTE}",
    ]


def out_of_memory(
    rank: int, script: str, wanted_gib: float, total_gib: float, free_gib: float,
    others: Sequence[tuple[int, float]],
) -> list[str]:  # fmt: skip
    """A rank's CUDA OOM as PyTorch words it: what it asked, what the GPU has and who
    holds the rest (``others``: pid, GiB)."""
    held = "".join(f"Process {pid} has {gib:.2f} GiB memory in use. " for pid, gib in others)
    return [
        f"[rank{rank}]: Traceback (most recent call last):",
        f'[rank{rank}]:   File "{script}", line 412, in <module>',
        f"[rank{rank}]:     model = build_model(cfg).to(device)",
        f"[rank{rank}]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
        f"{wanted_gib:.2f} GiB. GPU {rank} has a total capacity of {total_gib:.2f} GiB of "
        f"which {free_gib:.2f} GiB is free. {held}Of the allocated memory 0 bytes is "
        "allocated by PyTorch, and 0 bytes is reserved by PyTorch but unallocated.",
    ]


def step_out_of_memory(
    rank: int, wanted_gib: float, total_gib: float, free_gib: float, in_use_gib: float,
    allocated_gib: float, unallocated_gib: float, others: Sequence[tuple[int, float]],
) -> list[str]:  # fmt: skip
    """PyTorch's OOM of a training step, as a loop that catches it logs it (the
    batch-size manager, ``fakehw.train.memory``): the allocator's own account."""
    held = "".join(f"Process {pid} has {gib:.2f} GiB memory in use. " for pid, gib in others)
    return [
        f"[rank{rank}]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
        f"{wanted_gib:.2f} GiB. GPU {rank} has a total capacity of {total_gib:.2f} GiB of "
        f"which {free_gib:.2f} GiB is free. {held}Including non-PyTorch memory, this process "
        f"has {in_use_gib:.2f} GiB memory in use. Of the allocated memory {allocated_gib:.2f} "
        f"GiB is allocated by PyTorch, and {unallocated_gib:.2f} GiB is reserved by PyTorch "
        "but unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    ]


def group_will_restart(when: float, pid: int, attempts_left: int, attempts: int) -> str:
    return (
        f"{glog('I', when, '514000', pid, f'{ELASTIC}/agent/server/api.py:719')} [default] "
        f"Worker group FAILED. {attempts_left}/{attempts} attempts left; will restart "
        "worker group"
    )


def group_gave_up(when: float, pid: int, attempts: int, script: str) -> list[str]:
    """The last attempt failed: torchrun stops and raises."""
    return [
        f"{glog('E', when, '900000', pid, f'{ELASTIC}/agent/server/api.py:737')} [default] "
        f"Worker group FAILED. 0/{attempts} attempts left",
        f"{CHILD_FAILED}: {script} FAILED",
    ]


def gpu_gone(when: float, pid: int, lost: Sequence[int], binary: str, script: str) -> list[str]:
    """CUDA cannot start on a GPU that fell off the bus (XID 79) until the node reboots."""
    return [
        *(f"[rank{rank}]: RuntimeError: CUDA error: unknown error" for rank in lost),
        child_failed(when, pid, lost[0], None, binary, 1, fraction="950000"),
        f"{CHILD_FAILED}: {script} FAILED (GPU {lost[0]} fell off the bus: XID 79; the node "
        "needs a reboot)",
    ]


def restarting(when: float, pid: int, restart_count: int, master: str, nodes: int) -> list[str]:
    """torchrun stops what is left of the group and meets the other nodes again."""
    return [
        f"{glog('I', when, '201000', pid, f'{ELASTIC}/agent/server/api.py:525')} [default] "
        "Stopping worker group",
        f"{glog('I', when, '733000', pid, f'{ELASTIC}/agent/server/api.py:680')} [default] "
        f"Rendezvous complete for workers. Result: restart_count={restart_count}, "
        f"master_addr={master}, master_port={MASTER_PORT}, group_rank=0, "
        f"group_world_size={nodes}",
    ]
