"""The processes on the GPUs: who holds which GPUs, in which phase, with how much memory.

``ProcessTable`` is the one place processes are attached, moved between phases and
detached, and every request is checked before anything changes: a refused attach
leaves no trace, not even in the random stream it shares with the tick. Memory
follows PyTorch's caching allocator: a process's target only grows while it works
(the allocator keeps what it took); only the ``free`` phase (``empty_cache()``) or
the process's end gives memory back. ``fakehw.devices`` moves what each process
holds toward its target tick by tick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from fakehw.contract.limits import CYCLE_S_RANGE, INTENSITY_RANGE, MAX_PROCESSES_PER_GPU
from fakehw.specs import GpuSpec
from fakehw.thermal import FloatArray
from fakehw.workload import DEFAULT_CYCLE_S, PHASES, PhaseProfile

# memory.used on the device exceeds the sum of its processes by this much
# while any process is on it (46617 vs 46608 MiB on the H100, 52815 vs 52806
# on both H200s).
DRIVER_OVERHEAD_MIB = 9
# Defaults for a process that does not say how much memory a phase needs,
# as shares of the usable memory (the trace: 34363 and 46617 of 81079 MiB).
DEFAULT_LOAD_SHARE = 0.42
DEFAULT_TRAIN_SHARE = 0.575


class AttachOptions(TypedDict, total=False):
    """``ProcessTable.attach``'s keyword arguments, for the layers that pass them on."""

    user: str
    watch_pid: int | None
    watch_started: float | None
    memory_plan: Mapping[str, int] | None
    phase: str
    job: str | None


class PhaseOptions(TypedDict, total=False):
    """``ProcessTable.set_phase``'s keyword arguments, for the layers that pass them on."""

    memory_mib: int | None
    cycle_s: float | None
    intensity: float | None


class ClusterError(ValueError):
    """A request the cluster cannot honour (unknown pid, bad GPU index...)."""


class OutOfMemory(ClusterError):
    """A process asked for more GPU memory than is free (CUDA's out of memory)."""


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ClusterError(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")


@dataclass
class AttachedProcess:
    pid: int
    name: str
    gpus: tuple[int, ...]  # global GPU indices
    user: str
    watch_pid: int  # the real process whose death detaches this one
    # When watch_pid's process started, as psutil tells it (None: not known, in-process
    # use): a PID is that process only while its start time is this one.
    watch_started: float | None
    memory_plan: dict[str, int]
    job: str  # processes of one job run collectives together (NVLink traffic)
    phase: str = "context"
    phase_started: float = 0.0
    cycle_s: float = DEFAULT_CYCLE_S
    cycle_offset: float = 0.0
    intensity_scale: float = 1.0

    @property
    def profile(self) -> PhaseProfile:
        return PHASES[self.phase]

    @property
    def is_host_process(self) -> bool:
        """Whether ``pid`` is a process of this machine (it is its own watched process),
        rather than a record standing for one elsewhere (a rank on another node)."""
        return self.pid == self.watch_pid and self.watch_started is not None


class SlotTable:
    """One row per (process, GPU): the state a process keeps on each of its GPUs.

    Columns live in parallel arrays for vectorised ticks; rows are only added
    and removed here, and targets only set here, so the columns and the per-GPU
    sum of targets can never fall out of step.
    """

    def __init__(self, gpu_count: int) -> None:
        # what the processes on each GPU hold or are growing to: checked at every attach
        self.target_per_gpu = np.zeros(gpu_count)
        self.processes_per_gpu = np.zeros(gpu_count, dtype=np.int64)
        self.gpu = np.zeros(0, dtype=np.int64)
        self.pid = np.zeros(0, dtype=np.int64)
        self.used_mib = np.zeros(0)  # what the process holds there now
        self.target_mib = np.zeros(0)  # what its current phase needs
        self.intensity_bias = np.zeros(0)  # this rank's share of the work, fixed
        self.noise = np.zeros(0)  # AR(1) state of its kernel-mix fluctuation

    def __len__(self) -> int:
        return len(self.gpu)

    def add(self, pid: int, gpus: Sequence[int], intensity_bias: FloatArray) -> None:
        count = len(gpus)
        index = np.asarray(gpus, dtype=np.int64)
        np.add.at(self.processes_per_gpu, index, 1)
        self.gpu = np.concatenate([self.gpu, index])
        self.pid = np.concatenate([self.pid, np.full(count, pid, dtype=np.int64)])
        self.used_mib = np.concatenate([self.used_mib, np.zeros(count)])
        self.target_mib = np.concatenate([self.target_mib, np.zeros(count)])
        self.intensity_bias = np.concatenate([self.intensity_bias, intensity_bias])
        self.noise = np.concatenate([self.noise, np.zeros(count)])

    def set_target(self, rows: npt.NDArray[np.bool_], target_mib: FloatArray) -> None:
        np.add.at(self.target_per_gpu, self.gpu[rows], target_mib - self.target_mib[rows])
        self.target_mib[rows] = target_mib

    def remove(self, pids: Sequence[int]) -> None:
        """Drop every row of these processes (one pass, however many: a job's end)."""
        keep = ~np.isin(self.pid, np.asarray(pids, dtype=np.int64))
        np.subtract.at(self.target_per_gpu, self.gpu[~keep], self.target_mib[~keep])
        np.subtract.at(self.processes_per_gpu, self.gpu[~keep], 1)
        self.gpu = self.gpu[keep]
        self.pid = self.pid[keep]
        self.used_mib = self.used_mib[keep]
        self.target_mib = self.target_mib[keep]
        self.intensity_bias = self.intensity_bias[keep]
        self.noise = self.noise[keep]


class ProcessTable:
    """The attached processes and their slots (one per process and GPU), checked."""

    def __init__(self, spec: GpuSpec, gpu_count: int, rng: np.random.Generator) -> None:
        self.spec = spec
        self.gpu_count = gpu_count
        # the tick's random stream: an attach draws the new ranks' fixed quirks from it
        self._rng = rng
        self.processes: dict[int, AttachedProcess] = {}
        self.slots = SlotTable(gpu_count)

    def attach(
        self,
        pid: int,
        name: str,
        gpus: Sequence[int],
        *,
        user: str = "root",
        watch_pid: int | None = None,
        watch_started: float | None = None,
        memory_plan: Mapping[str, int] | None = None,
        phase: str = "context",
        job: str | None = None,
        now: float,
    ) -> AttachedProcess:
        """Put a process on GPUs (global indices). It starts with a bare context.

        Processes sharing a ``job`` name are ranks of one job: when together they
        span more than one GPU, training moves gradients over NVLink. Everything is
        checked before anything changes: a refused attach leaves no trace (not
        even in the random streams).
        """
        if pid in self.processes:
            raise ClusterError(f"pid {pid} is already attached")
        if not gpus:
            raise ClusterError("a process needs at least one GPU")
        bad = [g for g in gpus if not 0 <= g < self.gpu_count]
        if bad:
            raise ClusterError(
                f"GPU index {bad[0]} does not exist (the cluster has {self.gpu_count} GPUs, "
                f"0-{self.gpu_count - 1})"
            )
        if len(set(gpus)) != len(gpus):
            raise ClusterError("a process lists the same GPU twice")
        crowded = [g for g in gpus if self.slots.processes_per_gpu[g] >= MAX_PROCESSES_PER_GPU]
        if crowded:
            raise ClusterError(
                f"GPU {crowded[0]} already runs {MAX_PROCESSES_PER_GPU} processes, the most "
                "the daemon keeps per GPU"
            )
        _check_phase(phase)
        plan = self._checked_plan(memory_plan or {})
        process = AttachedProcess(
            pid=pid,
            name=name,
            gpus=tuple(int(g) for g in gpus),
            user=user,
            watch_pid=pid if watch_pid is None else watch_pid,
            watch_started=watch_started,
            memory_plan=plan,
            job=job if job is not None else f"pid-{pid}",
            phase=phase,
            phase_started=now,
        )
        # The new context and the starting phase's memory must fit beside what the
        # GPUs' other processes hold (as cudaMalloc would refuse otherwise).
        target = self._fitted_target(process, phase, np.zeros(len(gpus)), None)
        process.cycle_offset = float(self._rng.random())
        self.processes[pid] = process
        self.slots.add(pid, process.gpus, self._rng.normal(1.0, 0.03, len(process.gpus)))
        self.slots.set_target(self.slots.pid == pid, target)
        return process

    def set_phase(
        self,
        pid: int,
        phase: str,
        *,
        memory_mib: int | None = None,
        cycle_s: float | None = None,
        intensity: float | None = None,
        now: float,
    ) -> None:
        """Change what a process does on all its GPUs from now on (all or nothing)."""
        process = self.get(pid)
        _check_phase(phase)
        if memory_mib is not None:
            self._check_memory(memory_mib, f"memory_mib for phase {phase}")
        low, high = CYCLE_S_RANGE
        if cycle_s is not None and not low <= cycle_s <= high:
            raise ClusterError(f"cycle_s must be between {low:g} and {high:g} seconds")
        low, high = INTENSITY_RANGE
        if intensity is not None and not low <= intensity <= high:
            raise ClusterError(f"intensity must be between {low:g} and {high:g}")
        mask = self.slots.pid == pid
        target = self._fitted_target(process, phase, self.slots.target_mib[mask], memory_mib)
        process.phase = phase
        process.phase_started = now
        if cycle_s is not None:
            process.cycle_s = cycle_s
        if intensity is not None:
            process.intensity_scale = intensity
        self.slots.set_target(mask, target)

    def _fitted_target(
        self, process: AttachedProcess, phase: str, held: FloatArray, explicit: int | None
    ) -> FloatArray:
        """What ``process`` will hold on each of its GPUs in ``phase``, checked against
        what the other processes there hold (``held``: what it holds there now).

        The caching allocator keeps what it took: a target only grows, except in
        ``free``. A figure the caller asked for (``memory_mib``, the memory plan)
        that does not fit is refused as CUDA refuses it; a default is sized to what
        is free, as a program that sizes its batch to the GPU would.
        """
        wanted = self._phase_memory_target(process, phase, explicit)
        asked = explicit is not None or phase in process.memory_plan
        new = np.full(len(held), wanted) if phase == "free" else np.maximum(held, wanted)
        index = np.asarray(process.gpus, dtype=np.int64)
        others = self.slots.target_per_gpu[index] - held
        free = np.maximum(self.process_memory_limit_mib - others, 0.0)
        short = new > free
        if not short.any():
            return new
        if asked or np.any(free[short] < min(wanted, self.spec.context_mib)):
            worst = int(np.flatnonzero(short)[np.argmax((new - free)[short])])
            raise OutOfMemory(
                f"CUDA out of memory on GPU {int(index[worst])}: pid {process.pid} needs "
                f"{new[worst] / 1024:.2f} GiB there for {phase!r} but only "
                f"{free[worst] / 1024:.2f} GiB of the GPU's "
                f"{self.process_memory_limit_mib / 1024:.2f} GiB are free "
                "(other processes hold the rest)"
            )
        return np.where(short, np.maximum(held, np.floor(free)), new)

    @property
    def process_memory_limit_mib(self) -> int:
        """What a GPU leaves to its processes: usable memory less the driver's share."""
        return self.spec.memory_usable_mib - DRIVER_OVERHEAD_MIB

    def restore_holdings(self, pid: int, target_mib: Sequence[float], used_mib: Sequence[float]
                         ) -> None:  # fmt: skip
        """Give a re-attached process what it held before a restart, per GPU: its target
        and its memory in use, each only if it is whole (one figure per GPU, none below
        zero) and fits beside what the GPUs' other processes hold; else that one stays as
        the attach left it."""
        mask = self.slots.pid == pid
        for column, figures in (("target_mib", target_mib), ("used_mib", used_mib)):
            held = np.asarray(figures, dtype=np.float64)
            if held.shape != self.slots.used_mib[mask].shape:
                continue
            others = self.slots.target_per_gpu[self.slots.gpu[mask]] - self.slots.target_mib[mask]
            if not (np.all(others + held <= self.process_memory_limit_mib) and held.min() >= 0):
                continue
            if column == "target_mib":
                self.slots.set_target(mask, held)
            else:
                self.slots.used_mib[mask] = held

    def detach_many(self, pids: Sequence[int]) -> list[int]:
        """These processes ended (those of them attached): freed together, at the cost
        of one detach. Returns the PIDs that were attached."""
        gone = [pid for pid in dict.fromkeys(pids) if pid in self.processes]
        if not gone:
            return []
        for pid in gone:
            del self.processes[pid]
        self.slots.remove(gone)
        return gone

    def get(self, pid: int) -> AttachedProcess:
        try:
            return self.processes[pid]
        except KeyError:
            raise ClusterError(f"pid {pid} is not attached") from None

    def _check_memory(self, mib: object, what: str) -> None:
        usable = self.process_memory_limit_mib
        if isinstance(mib, bool) or not isinstance(mib, int) or not 0 <= mib <= usable:
            raise ClusterError(
                f"{what} must be a whole number of MiB from 0 to {usable} "
                f"(what a {self.spec.name} leaves to processes), got {mib!r}"
            )

    def _checked_plan(self, plan: Mapping[str, int]) -> dict[str, int]:
        checked = {}
        for phase, mib in plan.items():
            if phase not in PHASES:
                raise ClusterError(
                    f"memory plan names unknown phase {phase!r}; phases: {', '.join(PHASES)}"
                )
            self._check_memory(mib, f"memory plan for {phase}")
            checked[phase] = int(mib)
        return checked

    def _phase_memory_target(
        self, process: AttachedProcess, phase: str, explicit: int | None
    ) -> float:
        spec = self.spec
        if explicit is not None:
            return float(explicit)
        if phase in process.memory_plan:
            return float(process.memory_plan[phase])
        usable = self.process_memory_limit_mib
        spread = 1.0 + 0.03 * math.sin(process.pid)  # stable per process
        defaults = {
            "context": spec.context_mib,
            "load": usable * DEFAULT_LOAD_SHARE * spread,
            "train": usable * DEFAULT_TRAIN_SHARE * spread,
            "free": spec.free_floor_mib,
        }
        # eval, checkpoint and barrier run on what training already holds.
        return float(defaults.get(phase, spec.context_mib))

    def consistency_problem(self) -> str | None:
        """What is wrong with the process table, or None when it is whole."""
        slots = self.slots
        lengths = {len(column) for column in (slots.gpu, slots.pid, slots.used_mib,
                                              slots.target_mib, slots.intensity_bias,
                                              slots.noise)}  # fmt: skip
        if len(lengths) != 1:
            return f"slot columns of different lengths {sorted(lengths)}"
        counted = dict(zip(*np.unique(slots.pid, return_counts=True), strict=True))
        for pid, process in self.processes.items():
            if counted.pop(pid, 0) != len(process.gpus):
                return f"pid {pid} holds {len(process.gpus)} GPUs but has other slots"
        if counted:
            return f"slots of unattached pids {sorted(int(p) for p in counted)[:5]}"
        recount = np.bincount(slots.gpu, weights=slots.target_mib, minlength=self.gpu_count)
        if np.abs(recount - slots.target_per_gpu).max(initial=0.0) > 0.5:
            return "the per-GPU memory sums are out of step with the slots"
        if not np.array_equal(np.bincount(slots.gpu, minlength=self.gpu_count),
                              slots.processes_per_gpu):  # fmt: skip
            return "the per-GPU process counts are out of step with the slots"
        over = slots.target_per_gpu > self.process_memory_limit_mib + 0.5
        if over.any():
            return f"GPU {int(np.flatnonzero(over)[0])} holds more memory than it has"
        return None
