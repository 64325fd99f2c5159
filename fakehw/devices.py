"""The cluster: every GPU's state as numpy arrays, and the processes on them.

``Cluster.step(dt)`` advances the whole cluster at once; ``Cluster.snapshot()``
turns the current state into plain records (see ``fakehw.snapshot``). The
physics is in ``fakehw.thermal``; what each process asks of its GPUs is in
``fakehw.workload``. Nothing here renders anything or touches a socket.

Memory follows PyTorch's caching allocator: a process's usage climbs in steps
toward what its current phase needs and never shrinks while it works (the
allocator keeps what it took); only the ``free`` phase (``empty_cache()``) or
the process's end gives memory back.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fakehw import noise, specs, versions
from fakehw import snapshot as records
from fakehw.config import ClusterConfig
from fakehw.hostload import HostLoad
from fakehw.identity import GpuIdentity, gpu_identities, hostname
from fakehw.thermal import (
    ClockTable,
    FloatArray,
    ThermalCoefficients,
    cap_target_w,
    capped_clock_mhz,
    dynamic_power_w,
    foster_step,
    pole_decay,
    static_power_w,
    steady_rise_c,
)
from fakehw.workload import (
    DEFAULT_CYCLE_S,
    PHASES,
    TRAIN_INTENSITY_CYCLE,
    TRAIN_MEMORY_CYCLE,
    PhaseProfile,
)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# memory.used on the device exceeds the sum of its processes by this much
# while any process is on it (46617 vs 46608 MiB on the H100, 52815 vs 52806
# on both H200s).
DRIVER_OVERHEAD_MIB = 9
# NVML refreshes utilization every 200 ms on Hopper (values change in pairs at
# a 100 ms sampling rate in the trace).
UTILIZATION_PERIOD_S = 0.2
POWER_AVERAGE_WINDOW_S = 1.0
ALLOCATION_GRANULE_MIB = 2
# Defaults for a process that does not say how much memory a phase needs,
# as shares of the usable memory (the trace: 34363 and 46617 of 81079 MiB).
DEFAULT_LOAD_SHARE = 0.42
DEFAULT_TRAIN_SHARE = 0.575
# Idle PCIe chatter, KB/s, as nvidia-smi -q shows on an idle H100.
IDLE_PCIE_TX_KBPS = 920.0
IDLE_PCIE_RX_KBPS = 580.0
SENSOR_NOISE_C = 0.3
POWER_SENSOR_NOISE_W = 0.12
# pmon on the real H100 and H200: sm 99 % while the device reads 100 %;
# mem 44-56 % while the device reads 50-57 %.
PROCESS_SM_SHARE = 0.995
PROCESS_MEMORY_SHARE = 0.9
# Sample buffers behind `nvidia-smi -q -d UTILIZATION,POWER` ("... Samples"):
# utilization every 200 ms over 14 s, instantaneous power every tick over ~2.4 s.
UTILIZATION_HISTORY = 71
POWER_HISTORY = 25
# Lag-1 correlation of the kernel mix's power draw from tick to tick: with the
# controller a tick behind, it is what makes the 1 s power average wander
# (lag-1 correlation 0.30, sd 3.9 W; the trace: 0.37 and 3.2 W).
INTENSITY_NOISE_MEMORY = 0.55
# Rows of the per-GPU normal draw each tick: intensity drift, power sensor,
# die and memory sensors, PCIe tx and rx wander, NVLink jitter.
_GPU_DRAWS = 7
# The longest a daemon's state goes unsaved (the daemon spaces its saves within this).
# A restart adds up to this much time at the power limit to the energy counters, so
# that no reading a client saw before a kill -9 is ever undercut.
MAX_UNSAVED_STATE_S = 10.0
BRAKE_CLOCK_SHARE = 0.25  # of the maximum SM clock, under a power brake
# Hardware thermal slowdown engages at the slowdown temperature and lets go only
# once the die is this much cooler, so the clocks do not flap tick by tick.
HW_SLOWDOWN_RELEASE_C = 3.0
LOST_COOLING_W = 600.0  # a failed cooling path, as this much extra heat in the thermal model
MAX_PROCESSES_PER_GPU = 64  # attach is refused beyond this: no unbounded growth
_MEMORY_CYCLE = np.array(TRAIN_MEMORY_CYCLE) / np.mean(TRAIN_MEMORY_CYCLE)
# Each phase's demand figures as arrays over the phases, for the vectorised demand table.
_PHASE_ROW = {name: row for row, name in enumerate(PHASES)}
_PROFILE_TABLE: dict[str, FloatArray] = {
    field: np.array([float(getattr(profile, field)) for profile in PHASES.values()])
    for field in ("activity", "activity_while_allocating", "intensity", "intensity_jitter",
                  "memory_activity", "memory_activity_jitter", "cycled", "stall_rate_hz",
                  "pcie_tx_mb_s", "pcie_rx_mb_s", "nvlink_share", "allocation_rate_mib_s")
}  # fmt: skip
_INTENSITY_CYCLE = np.array(TRAIN_INTENSITY_CYCLE)


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


class Cluster:
    """All GPUs of all nodes, advanced together."""

    def __init__(self, config: ClusterConfig, start_time: float) -> None:
        self.config = config.validated()
        self.spec = self.config.spec
        self.coefficients = ThermalCoefficients.for_spec(self.spec)
        self.clock_table = ClockTable(self.spec)
        self.nodes = self.config.nodes
        self.gpus_per_node = self.config.gpus_per_node
        self.gpu_count = self.config.total_gpus
        self.hostnames = [
            hostname(self.config.resolved_hostname_prefix, n, self.nodes) for n in range(self.nodes)
        ]
        self.node_of_hostname = {name: index for index, name in enumerate(self.hostnames)}
        self.identities: list[GpuIdentity] = gpu_identities(
            self.spec,
            self.nodes,
            self.gpus_per_node,
            self.config.seed,
            self.config.resolved_hostname_prefix,
        )
        self.time = start_time
        self.tick = 0
        self.processes: dict[int, AttachedProcess] = {}
        self._rng = np.random.default_rng([self.config.seed, 0x6A11])
        self._init_manufacturing_spread(np.random.default_rng([self.config.seed, 0x5EED]))
        self._init_state()
        self._init_host()
        self._slots_changed()

    # ------------------------------------------------------------------ setup
    def _init_manufacturing_spread(self, rng: np.random.Generator) -> None:
        """Fixed per-GPU differences: two GPUs in one box differ by degrees and watts."""
        n, spec = self.gpu_count, self.spec
        self.idle_power_w = spec.idle_power_w * noise.clipped_normal(rng, n, 1, 0.05, 0.88, 1.14)
        self.context_extra_w = spec.context_extra_power_w * noise.clipped_normal(
            rng, n, 1, 0.05, 0.88, 1.12
        )
        self.dynamic_max_w = spec.dynamic_power_max_w * noise.clipped_normal(
            rng, n, 1, 0.025, 0.94, 1.06
        )
        self.thermal_scale = noise.clipped_normal(rng, n, 1, 0.04, 0.9, 1.12)
        # Air warms as it crosses the baseboard: GPUs further along run warmer.
        position = (np.arange(n) % self.gpus_per_node) % 4
        self.ambient_offset_c = rng.normal(0.0, 0.8, n) + 0.35 * position
        self.memory_offset_c = rng.normal(0.0, 0.7, n)
        self.power_limit_w = np.full(n, spec.power_default_w)
        # Correctable errors some boards logged before this "boot".
        history = rng.random(n) < 0.03
        self.ecc_history = np.where(history, rng.integers(1, 40, n), 0).astype(np.int64)
        self.util_phase_s = rng.uniform(0.0, UTILIZATION_PERIOD_S, n)
        uptime_s = rng.uniform(3 * 86400, 40 * 86400)
        self.energy_j = self.idle_power_w * uptime_s * rng.uniform(1.5, 4.0, n)

    def _init_state(self) -> None:
        n, spec, coeff = self.gpu_count, self.spec, self.coefficients
        self.node_of_gpu = np.arange(n) // self.gpus_per_node
        self.node_ambient_drift_c = noise.ou_start(self.nodes, 0.4, self._rng)
        self.intensity_drift = noise.ou_start(n, 0.015, self._rng)
        self.pcie_noise = noise.ou_start((2, n), 0.12, self._rng)
        self.die_gains = np.array(coeff.die_gains_c_per_w)[:, None] * self.thermal_scale[None, :]
        self.memory_gains = (
            np.array(coeff.memory_gains_c_per_w)[:, None] * self.thermal_scale[None, :]
        )
        self.die_rise_c = steady_rise_c(self.idle_power_w, self.die_gains)
        self.memory_rise_c = steady_rise_c(self.idle_power_w, self.memory_gains)
        self.sm_clock_mhz = np.full(n, float(spec.sm_clock_idle_mhz))
        self.power_w = self.idle_power_w.copy()
        self.demand_seen_w = np.zeros(n)
        self.clocks_event_reasons = np.full(n, records.REASON_GPU_IDLE, dtype=np.int64)
        self.counters_us = np.zeros((len(records.COUNTER_NAMES), n))
        self.util_window_s = self.util_phase_s.copy()
        self.util_gpu_acc = np.zeros(n)
        self.util_mem_acc = np.zeros(n)
        self.util_gpu_pct = np.zeros(n, dtype=np.int64)
        self.util_mem_pct = np.zeros(n, dtype=np.int64)
        self.pcie_kbps = np.array([[IDLE_PCIE_TX_KBPS], [IDLE_PCIE_RX_KBPS]]) * np.ones((2, n))
        self.nvlink_kbps = np.zeros((2, n))
        self.nvlink_kib_total = np.zeros((2, n))
        self.ecc_volatile = np.zeros(n, dtype=np.int64)
        self.xid_count = np.zeros(n, dtype=np.int64)
        self.last_xid = np.zeros(n, dtype=np.int64)
        # Injected faults (``inject``): lost cooling, a power brake, a GPU off the bus.
        self.fault_heat_w = np.zeros(n)
        self.fault_brake = np.zeros(n, dtype=bool)
        self.lost = np.zeros(n, dtype=bool)
        self.hw_slowdown = np.zeros(n, dtype=bool)  # hardware thermal slowdown engaged
        self.ecc_uncorrected = np.zeros(n, dtype=np.int64)  # since the board was made
        self.ecc_uncorrected_volatile = np.zeros(n, dtype=np.int64)  # since the last reset
        self.memory_activity = np.zeros(n)
        self.activity = np.zeros(n)
        self.has_context = np.zeros(n, dtype=bool)
        self._energy_window: deque[tuple[float, FloatArray]] = deque()
        # As if the GPU had drawn its current power for the last second.
        past_energy = self.energy_j - self.power_w * POWER_AVERAGE_WINDOW_S
        self._energy_window.append((self.time - POWER_AVERAGE_WINDOW_S, past_energy))
        self._decay_cache: dict[float, tuple[FloatArray, FloatArray]] = {}
        self.slots = SlotTable(n)
        self._util_history = np.zeros((UTILIZATION_HISTORY, 2, n), dtype=np.uint8)
        self._util_history_times = np.full(UTILIZATION_HISTORY, np.nan)
        self._util_history_due = self.time
        self._util_history_count = 0
        self._power_history = np.zeros((POWER_HISTORY, n), dtype=np.float32)
        self._power_history_times = np.full(POWER_HISTORY, np.nan)
        self._publish_memory()
        self._raw_readings = (self.power_w, self.power_w, np.zeros((2, n)))
        self._published_tick = -1

    def _init_host(self) -> None:
        """The servers around the GPUs (own random stream: the GPUs' is unchanged)."""
        self._host_rng = np.random.default_rng([self.config.seed, 0x4057])
        host = self.spec.host
        boot = self.time - self._host_rng.uniform(3 * 86400, 40 * 86400, self.nodes)
        self.host_load = HostLoad(
            self.nodes, host.logical_cpus, host.memory_gib, boot, self._host_rng
        )

    # -------------------------------------------------------------- processes
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
        crowded = [g for g in gpus if self._slot_count_per_gpu[g] >= MAX_PROCESSES_PER_GPU]
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
            phase_started=self.time,
        )
        # The new context and the starting phase's memory must fit beside what the
        # GPUs' other processes hold (as cudaMalloc would refuse otherwise).
        target = self._fitted_target(process, phase, np.zeros(len(gpus)), None)
        process.cycle_offset = float(self._rng.random())
        self.processes[pid] = process
        self.slots.add(pid, process.gpus, self._rng.normal(1.0, 0.03, len(process.gpus)))
        self.slots.set_target(self.slots.pid == pid, target)
        self._slots_changed()
        return process

    def set_phase(
        self,
        pid: int,
        phase: str,
        *,
        memory_mib: int | None = None,
        cycle_s: float | None = None,
        intensity: float | None = None,
    ) -> None:
        """Change what a process does on all its GPUs from now on (all or nothing)."""
        process = self._process(pid)
        _check_phase(phase)
        if memory_mib is not None:
            self._check_memory(memory_mib, f"memory_mib for phase {phase}")
        if cycle_s is not None and not 0.05 <= cycle_s <= 600:
            raise ClusterError("cycle_s must be between 0.05 and 600 seconds")
        if intensity is not None and not 0.0 <= intensity <= 1.5:
            raise ClusterError("intensity must be between 0 and 1.5")
        mask = self.slots.pid == pid
        target = self._fitted_target(process, phase, self.slots.target_mib[mask], memory_mib)
        process.phase = phase
        process.phase_started = self.time
        if cycle_s is not None:
            process.cycle_s = cycle_s
        if intensity is not None:
            process.intensity_scale = intensity
        self.slots.set_target(mask, target)
        self._slots_changed()

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
        others = self._target_per_gpu()[index] - held
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

    def _target_per_gpu(self) -> FloatArray:
        """MiB the processes on each GPU hold or are growing to (their targets)."""
        return self.slots.target_per_gpu

    @property
    def process_memory_limit_mib(self) -> int:
        """What a GPU leaves to its processes: usable memory less the driver's share."""
        return self.spec.memory_usable_mib - DRIVER_OVERHEAD_MIB

    # ------------------------------------------------------------ persistence
    PERSISTED = ("energy_j", "die_rise_c", "memory_rise_c", "ecc_volatile", "ecc_uncorrected",
                 "xid_count", "last_xid", "fault_heat_w", "fault_brake", "lost", "counters_us",
                 "nvlink_kib_total", "power_limit_w", "power_w")  # fmt: skip
    # Restored when saved (a state saved by an older fakehw restores without them): the
    # counters a reset moves between volatile and aggregate, and the last readings, so
    # that the first snapshot after a restart is the last one before it.
    READINGS = ("ecc_history", "ecc_uncorrected_volatile",
                "sm_clock_mhz", "demand_seen_w", "activity", "memory_activity",
                "util_gpu_pct", "util_mem_pct", "util_window_s", "util_gpu_acc", "util_mem_acc",
                "clocks_event_reasons", "hw_slowdown", "pcie_kbps", "nvlink_kbps")  # fmt: skip

    def state(self) -> dict[str, Any]:
        """What must outlive the daemon: counters, heat, errors, faults, processes."""
        arrays = {
            name: np.array(getattr(self, name), copy=True)
            for name in (*self.PERSISTED, *self.READINGS)
        }
        rows: dict[int, list[int]] = {}  # pid -> its slots, in one pass over the table
        for row, pid in enumerate(self.slots.pid.tolist()):
            rows.setdefault(pid, []).append(row)
        used, target = self.slots.used_mib.tolist(), self.slots.target_mib.tolist()
        processes = [
            {"pid": p.pid, "name": p.name, "gpus": list(p.gpus), "user": p.user,
             "watch_pid": p.watch_pid, "watch_started": p.watch_started,
             "memory_plan": p.memory_plan, "job": p.job, "phase": p.phase,
             "cycle_s": p.cycle_s, "intensity": p.intensity_scale,
             "used_mib": [used[r] for r in rows.get(p.pid, [])],
             "target_mib": [target[r] for r in rows.get(p.pid, [])]}
            for p in self.processes.values()
        ]  # fmt: skip
        return {"time": self.time, "config": self.config.to_json(), "arrays": arrays,
                "processes": processes}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> bool:
        """Carry on from a saved state of the same cluster; False if it does not fit."""
        if state.get("config") != self.config.to_json():
            return False
        arrays = state.get("arrays", {})
        for name in self.PERSISTED:
            current = getattr(self, name)
            saved = arrays.get(name)
            if saved is None or np.shape(saved) != np.shape(current):
                return False
        for name in (*self.PERSISTED, *self.READINGS):
            saved = arrays.get(name)
            if saved is not None and np.shape(saved) == np.shape(getattr(self, name)):
                setattr(self, name, np.array(saved, dtype=getattr(self, name).dtype))
        # The model resumes at the saved instant: the caller steps it through the gap
        # (``Simulator.advance_to``), the surviving processes carrying on in their
        # phases, so heat and energy evolve as they would have. A change made after the
        # last save is lost; the energy counter gets the most that interval could have
        # drawn on top, so that no reading a client saw before the kill is ever undercut.
        saved_time = float(state.get("time", self.time))
        unsaved_s = min(max(0.0, self.time - saved_time), MAX_UNSAVED_STATE_S)
        if 0 < saved_time < self.time:
            self.time = saved_time
        self.energy_j = self.energy_j + self.power_limit_w * unsaved_s
        self._energy_window.clear()
        before = self.energy_j - self.power_w * POWER_AVERAGE_WINDOW_S
        self._energy_window.append((self.time - POWER_AVERAGE_WINDOW_S, before))
        self._util_history_due = self.time
        # The processes carry on where they were (the caller drops those whose
        # watched process died meanwhile): the GPUs do not idle through a restart.
        for saved in state.get("processes", []):
            with contextlib.suppress(ClusterError, KeyError, TypeError, ValueError):
                self._restore_process(saved)
        self._publish_memory()
        n = self.gpu_count
        self._raw_readings = (self.power_w.copy(), self.power_w.copy(), np.zeros((2, n)))
        self._published_tick = -1
        return True

    def _restore_process(self, saved: Mapping[str, Any]) -> None:
        """Attach a saved process again, holding what it held (checked as any attach)."""
        pid = saved["pid"]
        self.attach(
            pid, saved["name"], saved["gpus"], user=saved["user"],
            watch_pid=saved["watch_pid"], watch_started=saved.get("watch_started"),
            memory_plan=saved["memory_plan"], phase="context", job=saved["job"],
        )  # fmt: skip
        try:
            self.set_phase(pid, saved["phase"], cycle_s=saved["cycle_s"],
                           intensity=saved["intensity"])  # fmt: skip
            mask = self.slots.pid == pid
            for column in ("target_mib", "used_mib"):
                held = np.asarray(saved.get(column, []), dtype=np.float64)
                if held.shape != self.slots.used_mib[mask].shape:
                    continue
                others = self._target_per_gpu()[self.slots.gpu[mask]] - self.slots.target_mib[mask]
                if not (np.all(others + held <= self.process_memory_limit_mib) and held.min() >= 0):
                    continue
                if column == "target_mib":
                    self.slots.set_target(mask, held)
                else:
                    self.slots.used_mib[mask] = held
        except (ClusterError, KeyError, TypeError, ValueError):
            self.detach(pid)
            raise

    def inject(self, gpu: int, fault: str, count: int = 1) -> list[str]:
        """Make a GPU (global index) misbehave; returns its faults now.

        ``thermal``: its cooling fails, it heats to slowdown and throttles;
        ``power-brake``: clocks held near their floor; ``ecc``: ``count``
        corrected single-bit errors; ``ecc-uncorrectable``: a double-bit error
        (XID 48); ``xid79``: the GPU falls off the bus; ``clear``: all undone,
        as after a reset: the volatile error counts start again from zero, the
        aggregate ones keep every error.
        """
        if not 0 <= gpu < self.gpu_count:
            raise ClusterError(f"GPU {gpu} does not exist (0-{self.gpu_count - 1})")
        if fault == "thermal":
            self.fault_heat_w[gpu] = LOST_COOLING_W
        elif fault == "power-brake":
            self.fault_brake[gpu] = True
        elif fault == "ecc":
            if not 1 <= count <= 1_000_000:
                raise ClusterError("count must be from 1 to 1000000")
            self.ecc_volatile[gpu] += count
        elif fault == "ecc-uncorrectable":
            self.ecc_uncorrected[gpu] += 1
            self.ecc_uncorrected_volatile[gpu] += 1
            self._xid(gpu, 48)
        elif fault == "xid79":
            self.lost[gpu] = True
            self._xid(gpu, 79)
        elif fault == records.CLEAR_FAULTS:  # a GPU reset: volatile counts go to the aggregate ones
            self.fault_heat_w[gpu] = 0.0
            self.fault_brake[gpu] = False
            self.lost[gpu] = False
            self.ecc_history[gpu] += self.ecc_volatile[gpu]
            self.ecc_volatile[gpu] = 0
            self.ecc_uncorrected_volatile[gpu] = 0
        else:
            raise ClusterError(
                f"unknown fault {fault!r}; faults: {', '.join(records.GPU_FAULTS)}, "
                f"{records.CLEAR_FAULTS}"
            )
        self._published_tick = -1
        return self.faults_of(gpu)

    def _xid(self, gpu: int, code: int) -> None:
        self.xid_count[gpu] += 1
        self.last_xid[gpu] = code

    def faults_of(self, gpu: int) -> list[str]:
        faults = []
        if self.fault_heat_w[gpu] > 0:
            faults.append("thermal")
        if self.fault_brake[gpu]:
            faults.append("power-brake")
        if self.ecc_uncorrected_volatile[gpu]:
            faults.append("ecc-uncorrectable")
        if self.lost[gpu]:
            faults.append("xid79")
        return faults

    def detach(self, pid: int) -> AttachedProcess:
        """The process ended: its memory is freed at once, as the driver does."""
        process = self._process(pid)
        self.detach_many([pid])
        return process

    def detach_many(self, pids: Sequence[int]) -> list[int]:
        """These processes ended (those of them attached): freed together, at the cost
        of one detach. Returns the PIDs that were attached."""
        gone = [pid for pid in dict.fromkeys(pids) if pid in self.processes]
        if not gone:
            return []
        for pid in gone:
            del self.processes[pid]
        self.slots.remove(gone)
        self._slots_changed()
        self._publish_memory()
        return gone

    def _process(self, pid: int) -> AttachedProcess:
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
        usable = spec.memory_usable_mib - DRIVER_OVERHEAD_MIB
        spread = 1.0 + 0.03 * math.sin(process.pid)  # stable per process
        defaults = {
            "context": spec.context_mib,
            "load": usable * DEFAULT_LOAD_SHARE * spread,
            "train": usable * DEFAULT_TRAIN_SHARE * spread,
            "free": spec.free_floor_mib,
        }
        # eval, checkpoint and barrier run on what training already holds.
        return float(defaults.get(phase, spec.context_mib))

    def _slots_changed(self) -> None:
        """After an attach, phase change or detach: what the next check needs now, and
        the demand table marked for a rebuild before the next tick (a job attaching
        8,192 processes rebuilds it once, not 8,192 times)."""
        self._slot_count_per_gpu = self.slots.processes_per_gpu
        self.has_context = self._slot_count_per_gpu > 0
        self._demand_stale = True

    def _refresh_demand(self) -> None:
        """Rebuild the per-slot demand table, if the processes changed since it was built:
        per process once, then spread to its slots (65,536 slots cost milliseconds)."""
        if not self._demand_stale:
            return
        self._demand_stale = False
        procs = list(self.processes.values())
        row_of = {p.pid: row for row, p in enumerate(procs)}
        proc = np.array([row_of[pid] for pid in self.slots.pid.tolist()], dtype=np.int64)
        phase = np.array([_PHASE_ROW[p.phase] for p in procs], dtype=np.int64)[proc]
        table = _PROFILE_TABLE

        def per_process(values: list[float]) -> FloatArray:
            column: FloatArray = np.array(values, dtype=np.float64)[proc]
            return column

        self._slot_activity = table["activity"][phase]
        self._slot_alloc_activity = table["activity_while_allocating"][phase]
        self._slot_intensity = table["intensity"][phase] * per_process(
            [p.intensity_scale for p in procs]
        )
        self._slot_intensity_jitter = table["intensity_jitter"][phase]
        self._slot_memory_activity = table["memory_activity"][phase]
        self._slot_memory_jitter = table["memory_activity_jitter"][phase]
        self._slot_cycled = table["cycled"][phase] > 0
        self._slot_cycle_s = per_process([p.cycle_s for p in procs])
        self._slot_cycle_offset = per_process([p.cycle_offset for p in procs])
        self._slot_phase_started = per_process([p.phase_started for p in procs])
        self._slot_stall_hz = table["stall_rate_hz"][phase]
        self._slot_pcie = np.stack([table["pcie_tx_mb_s"][phase], table["pcie_rx_mb_s"][phase]])
        job_gpus: dict[str, int] = {}
        for process in procs:
            job_gpus[process.job] = job_gpus.get(process.job, 0) + len(process.gpus)
        spans = per_process([1.0 if job_gpus[p.job] > 1 else 0.0 for p in procs])
        self._slot_nvlink_share = table["nvlink_share"][phase] * spans
        self._slot_alloc_rate = table["allocation_rate_mib_s"][phase]
        self.host_load.set_processes((p.gpus[0] // self.gpus_per_node, p.phase) for p in procs)

    # ------------------------------------------------------------------- tick
    def step(self, dt_s: float) -> None:
        """Advance every GPU by ``dt_s`` seconds."""
        if not dt_s > 0:
            raise ValueError("dt must be positive")
        self._refresh_demand()
        self.time += dt_s
        self.tick += 1
        rng, spec, n = self._rng, self.spec, self.gpu_count
        # All of this tick's randomness in three draws (per-call cost dominates
        # small clusters): per-GPU normals, per-slot normals and uniforms.
        normal = rng.standard_normal((_GPU_DRAWS, n))
        slot_normal = rng.standard_normal((2, len(self.slots)))
        slot_uniform = rng.random((3, len(self.slots)))

        self.host_load.step(dt_s, self._host_rng.standard_normal(self.nodes))
        ramping = self._allocate(dt_s, slot_uniform[0])
        activity_slot, work_slot, mem_slot = self._slot_demand(
            dt_s, ramping, slot_normal, slot_uniform[1:]
        )
        gpu = self.slots.gpu
        activity = np.minimum(1.0, np.bincount(gpu, weights=activity_slot, minlength=n))
        work = np.bincount(gpu, weights=work_slot, minlength=n)
        busy_total = np.bincount(gpu, weights=activity_slot, minlength=n)
        work = np.where(busy_total > 1.0, work / np.maximum(busy_total, 1e-9), work)
        memory_activity = np.minimum(1.0, np.bincount(gpu, weights=mem_slot, minlength=n))
        self.activity, self.memory_activity = activity, memory_activity

        self.intensity_drift = noise.ou_step(self.intensity_drift, dt_s, 30.0, 0.015, normal[0])
        demand_w = work * self.dynamic_max_w * (1.0 + self.intensity_drift)

        die_c = self._die_temp_c()
        static_w = static_power_w(
            die_c,
            self.has_context,
            self.idle_power_w,
            self.context_extra_w,
            spec.idle_temp_c,
            self.coefficients,
        )
        ceiling = np.where(
            self.has_context, float(spec.sm_clock_max_mhz), float(spec.sm_clock_idle_mhz)
        )
        hw_thermal = (die_c >= spec.temp_slowdown_c) | (
            self.hw_slowdown & (die_c > spec.temp_slowdown_c - HW_SLOWDOWN_RELEASE_C)
        )
        self.hw_slowdown = hw_thermal
        ceiling = np.where(hw_thermal, np.minimum(ceiling, 0.5 * spec.sm_clock_max_mhz), ceiling)
        # An external power brake (the chassis asks for less): clocks near their floor.
        ceiling = np.where(
            self.fault_brake,
            np.minimum(ceiling, BRAKE_CLOCK_SHARE * spec.sm_clock_max_mhz),
            ceiling,
        )
        # Software thermal slowdown holds the die at its maximum operating temperature.
        over_c = die_c - (spec.temp_max_operating_c - 1.0)
        sw_thermal = over_c > 0
        target_w = cap_target_w(self.power_limit_w) - np.where(sw_thermal, 25.0 * over_c, 0.0)
        working = self.demand_seen_w > 1.0
        clock, cap_limited = capped_clock_mhz(
            self.clock_table, target_w, static_w, self.demand_seen_w, ceiling
        )
        clock = np.where(working, clock, ceiling)
        cap_limited &= working
        self.sm_clock_mhz = clock
        # The controller acts on what it saw last tick: power overshoots at a
        # load step and scatters around the cap, as on the real trace.
        self.demand_seen_w = demand_w
        power = static_w + dynamic_power_w(demand_w, clock, spec)
        power = power + POWER_SENSOR_NOISE_W * normal[1]
        self.power_w = power

        die_decay, memory_decay = self._decays(dt_s)
        # Failed cooling heats the die as this much more power would.
        heat = power + self.fault_heat_w
        self.die_rise_c = foster_step(self.die_rise_c, heat, self.die_gains, die_decay)
        self.memory_rise_c = foster_step(self.memory_rise_c, power, self.memory_gains, memory_decay)
        self.node_ambient_drift_c = noise.ou_step(
            self.node_ambient_drift_c, dt_s, 900.0, 0.4, rng.standard_normal(self.nodes)
        )

        self.energy_j = self.energy_j + power * dt_s
        average_w = self._average_power_w()
        reasons = np.zeros(n, dtype=np.int64)
        reasons |= np.where(activity < 0.005, records.REASON_GPU_IDLE, 0)
        reasons |= np.where(cap_limited & ~sw_thermal & ~hw_thermal, records.REASON_SW_POWER_CAP, 0)
        reasons |= np.where(sw_thermal, records.REASON_SW_THERMAL, 0)
        reasons |= np.where(hw_thermal, records.REASON_HW_THERMAL | records.REASON_HW_SLOWDOWN, 0)
        reasons |= np.where(
            self.fault_brake, records.REASON_HW_POWER_BRAKE | records.REASON_HW_SLOWDOWN, 0
        )
        self.clocks_event_reasons = reasons
        self.counters_us[0] += np.where(reasons & records.REASON_SW_POWER_CAP, dt_s * 1e6, 0)
        self.counters_us[2] += np.where(sw_thermal, dt_s * 1e6, 0)
        self.counters_us[3] += np.where(hw_thermal, dt_s * 1e6, 0)

        self._sample_utilization(dt_s, activity, memory_activity)
        self._record_history(power)
        self._traffic(dt_s, ramping, normal[4:7])
        self._raw_readings = (average_w, power, normal[2:4].copy())
        self._published_tick = -1

    def _decays(self, dt_s: float) -> tuple[FloatArray, FloatArray]:
        key = round(dt_s, 6)
        cached = self._decay_cache.get(key)
        if cached is None:
            cached = (
                pole_decay(self.coefficients.die_taus_s, dt_s),
                pole_decay(self.coefficients.memory_taus_s, dt_s),
            )
            if len(self._decay_cache) > 64:
                self._decay_cache.clear()
            self._decay_cache[key] = cached
        return cached

    def _allocate(self, dt_s: float, uniform: FloatArray) -> BoolArray:
        """Move each slot's memory toward its target in allocator-sized steps."""
        remaining = self.slots.target_mib - self.slots.used_mib
        growing = remaining > 0.5
        burst = self._slot_alloc_rate * dt_s * (0.2 + 1.6 * uniform)
        burst = np.ceil(burst / ALLOCATION_GRANULE_MIB) * ALLOCATION_GRANULE_MIB
        self.slots.used_mib = np.where(
            growing, self.slots.used_mib + np.minimum(burst, remaining), self.slots.target_mib
        )
        self._publish_memory()
        ramping: BoolArray = growing
        return ramping

    def _slot_demand(
        self, dt_s: float, ramping: BoolArray, normal: FloatArray, uniform: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Activity, work (activity x intensity) and memory activity of each slot now."""
        activity = np.where(
            ramping, np.maximum(self._slot_activity, self._slot_alloc_activity), self._slot_activity
        )
        # Short input stalls dent utilization now and then.
        stalled = uniform[0] < self._slot_stall_hz * dt_s
        activity = np.where(stalled, activity * (0.88 + 0.11 * uniform[1]), activity)
        # Kernel mix fluctuates with a short memory (AR(1) per tick).
        keep = INTENSITY_NOISE_MEMORY
        self.slots.noise = keep * self.slots.noise + math.sqrt(1 - keep * keep) * normal[0]
        intensity = self._slot_intensity * self.slots.intensity_bias
        intensity = intensity * (1.0 + self._slot_intensity_jitter * self.slots.noise)
        memory_activity = self._slot_memory_activity
        if self._slot_cycled.any():
            phase = (self.time - self._slot_phase_started) / self._slot_cycle_s
            phase = (phase + self._slot_cycle_offset) % 1.0
            piece = np.minimum(
                (phase * len(TRAIN_MEMORY_CYCLE)).astype(np.int64), len(TRAIN_MEMORY_CYCLE) - 1
            )
            memory_shape = _MEMORY_CYCLE[piece]
            memory_activity = np.where(
                self._slot_cycled, memory_activity * memory_shape, memory_activity
            )
            intensity = np.where(self._slot_cycled, intensity * _INTENSITY_CYCLE[piece], intensity)
        memory_activity = memory_activity + self._slot_memory_jitter * normal[1]
        memory_activity = np.minimum(np.maximum(memory_activity * (activity > 0), 0.0), 1.0)
        work = activity * np.maximum(intensity, 0.0)
        return activity, work, memory_activity

    def _sample_utilization(
        self, dt_s: float, activity: FloatArray, memory_activity: FloatArray
    ) -> None:
        """NVML's utilization: the busy share of the last 200 ms window, held till the next."""
        self.util_gpu_acc += activity * dt_s
        self.util_mem_acc += memory_activity * dt_s
        self.util_window_s += dt_s
        due = self.util_window_s >= UTILIZATION_PERIOD_S
        if due.any():
            window = np.maximum(self.util_window_s, 1e-9)
            gpu_pct = np.rint(100.0 * self.util_gpu_acc / window).astype(np.int64)
            mem_pct = np.rint(100.0 * self.util_mem_acc / window).astype(np.int64)
            self.util_gpu_pct = np.where(due, np.minimum(gpu_pct, 100), self.util_gpu_pct)
            self.util_mem_pct = np.where(due, np.minimum(mem_pct, 100), self.util_mem_pct)
            self.util_gpu_acc = np.where(due, 0.0, self.util_gpu_acc)
            self.util_mem_acc = np.where(due, 0.0, self.util_mem_acc)
            self.util_window_s = np.where(due, 0.0, self.util_window_s)

    def _record_history(self, power: FloatArray) -> None:
        slot = self.tick % POWER_HISTORY
        self._power_history[slot] = power
        self._power_history_times[slot] = self.time
        if self.time >= self._util_history_due - 1e-6:
            self._util_history_due += UTILIZATION_PERIOD_S
            if self._util_history_due < self.time:  # after a long step
                self._util_history_due = self.time + UTILIZATION_PERIOD_S
            slot = self._util_history_count % UTILIZATION_HISTORY
            self._util_history_count += 1
            self._util_history[slot, 0] = self.util_gpu_pct
            self._util_history[slot, 1] = self.util_mem_pct
            self._util_history_times[slot] = self.time

    def _samples(self, section: slice) -> list[dict[str, list[float]]]:
        """Per GPU: [duration s, count, max, min, avg] of each sample buffer."""

        def stats(values: npt.NDArray[np.float64], times: FloatArray) -> list[list[float]]:
            kept = ~np.isnan(times)
            count = int(kept.sum())
            if count == 0:
                return [[0.0, 0, 0.0, 0.0, 0.0] for _ in range(values.shape[1])]
            span = float(np.nanmax(times) - np.nanmin(times))
            rows = values[kept]
            return [
                [span, count, float(hi), float(lo), float(mean)]
                for hi, lo, mean in zip(
                    rows.max(axis=0), rows.min(axis=0), rows.mean(axis=0), strict=True
                )
            ]

        util_times = self._util_history_times
        gpu = stats(self._util_history[:, 0, section].astype(np.float64), util_times)
        memory = stats(self._util_history[:, 1, section].astype(np.float64), util_times)
        power = stats(
            self._power_history[:, section].astype(np.float64) * 1000.0, self._power_history_times
        )
        return [
            {"gpu_util": g, "memory_util": m, "power_mw": p}
            for g, m, p in zip(gpu, memory, power, strict=True)
        ]

    def _traffic(self, dt_s: float, ramping: BoolArray, normal: FloatArray) -> None:
        """PCIe and NVLink throughput, smoothed as NVML reports it (KB/s)."""
        n = self.gpu_count
        gpu = self.slots.gpu
        tx = np.bincount(gpu, weights=self._slot_pcie[0], minlength=n) * 1000.0
        rx_phase = np.bincount(gpu, weights=self._slot_pcie[1], minlength=n) * 1000.0
        loading = np.bincount(
            gpu, weights=np.where(ramping, self._slot_alloc_rate, 0.0) * 1048.576, minlength=n
        )
        self.pcie_noise = noise.ou_step(self.pcie_noise, dt_s, 2.0, 0.12, normal[0:2])
        wanted = np.empty((2, n))
        wanted[0] = tx + IDLE_PCIE_TX_KBPS
        wanted[1] = rx_phase + np.minimum(loading, 5.8e6) + IDLE_PCIE_RX_KBPS
        wanted *= 1.0 + self.pcie_noise
        keep = math.exp(-dt_s / 0.5)
        self.pcie_kbps = wanted + (self.pcie_kbps - wanted) * keep
        link_kbps = self.spec.nvlink_count * self.spec.nvlink_link_gbps * 1e6
        share = np.bincount(gpu, weights=self._slot_nvlink_share, minlength=n)
        nvlink = np.maximum(
            np.minimum(share, 1.0) * link_kbps * self.activity * (1.0 + 0.1 * normal[2]), 0.0
        )
        self.nvlink_kbps[0] = nvlink
        self.nvlink_kbps[1] = nvlink * 0.998
        self.nvlink_kib_total += self.nvlink_kbps * dt_s * (1000.0 / 1024.0)

    def _die_temp_c(self) -> FloatArray:
        ambient = (
            self.coefficients.ambient_die_c
            + self.ambient_offset_c
            + self.node_ambient_drift_c[self.node_of_gpu]
        )
        result: FloatArray = ambient + self.die_rise_c.sum(axis=0)
        return result

    def _memory_temp_c(self) -> FloatArray:
        ambient = (
            self.coefficients.ambient_memory_c
            + self.ambient_offset_c
            + self.memory_offset_c
            + self.node_ambient_drift_c[self.node_of_gpu]
        )
        result: FloatArray = ambient + self.memory_rise_c.sum(axis=0)
        return result

    def _average_power_w(self) -> FloatArray:
        """nvidia-smi's power.draw: energy over the last second."""
        window = self._energy_window
        window.append((self.time, self.energy_j.copy()))
        while len(window) > 2 and self.time - window[1][0] >= POWER_AVERAGE_WINDOW_S:
            window.popleft()
        start_time, start_energy = window[0]
        span = max(self.time - start_time, 1e-9)
        result: FloatArray = (self.energy_j - start_energy) / span
        return result

    # -------------------------------------------------------------- reporting
    def _publish_memory(self) -> None:
        used = np.bincount(self.slots.gpu, weights=self.slots.used_mib, minlength=self.gpu_count)
        with_process = np.bincount(self.slots.gpu, minlength=self.gpu_count) > 0
        self.memory_used_mib = (np.rint(used) + DRIVER_OVERHEAD_MIB * with_process).astype(np.int64)

    def _ensure_published(self) -> None:
        """Quantize the state to what NVML returns, at most once per tick.

        Done when someone looks (a daemon nobody watches skips it); the sensor
        noise was drawn during the tick, so looking never changes the story.
        """
        if self._published_tick == self.tick:
            return
        self._published_tick = self.tick
        average_w, instant_w, sensor_noise = self._raw_readings
        spec = self.spec
        die_c = self._die_temp_c() + SENSOR_NOISE_C * sensor_noise[0]
        memory_c = self._memory_temp_c() + SENSOR_NOISE_C * sensor_noise[1]
        self.reported_die_c = np.rint(die_c).astype(np.int64)
        self.reported_memory_c = np.rint(memory_c).astype(np.int64)
        self.reported_power_mw = np.rint(average_w * 1000.0).astype(np.int64)
        self.reported_instant_mw = np.rint(instant_w * 1000.0).astype(np.int64)
        memory_power = (
            spec.memory_power_idle_w
            + (spec.memory_power_max_w - spec.memory_power_idle_w) * self.memory_activity
        )
        self.reported_memory_power_mw = np.rint(memory_power * 1000.0).astype(np.int64)
        self.reported_sm_mhz = np.rint(self.sm_clock_mhz).astype(np.int64)
        video = np.where(self.has_context, spec.video_clock_max_mhz, spec.video_clock_idle_mhz)
        self.reported_video_mhz = video.astype(np.int64)
        self.reported_pcie_kbps = np.rint(self.pcie_kbps).astype(np.int64)
        self.reported_nvlink_kbps = np.rint(self.nvlink_kbps).astype(np.int64)

    def snapshot(
        self, nodes: Sequence[int] | None = None, detail: bool = False
    ) -> records.Snapshot:
        """The current state as plain records (all nodes, or the ones named).

        ``detail`` adds each GPU's sample buffers (what ``nvidia-smi -q -d``
        summarises as "GPU Utilization Samples", "Power Samples").
        """
        wanted = range(self.nodes) if nodes is None else nodes
        for node in wanted:
            if not 0 <= node < self.nodes:
                raise ClusterError(f"node {node} does not exist (0-{self.nodes - 1})")
        self._ensure_published()
        spec = self.spec
        return {
            "protocol": 1,
            "tick": self.tick,
            "time": self.time,
            "driver_version": versions.DRIVER_VERSION,
            "cuda_version": versions.CUDA_VERSION,
            "nvml_version": versions.NVML_VERSION,
            "cluster": self.config.to_json(),
            "models": {spec.key: specs.model_record(spec)},
            "nodes": [self._node_record(node, detail) for node in wanted],
        }

    def summary(self) -> records.ClusterSummary:
        """A few figures per GPU for the whole cluster, as columns (a few bytes a GPU):
        what a cluster-wide view draws where a full snapshot would be megabytes."""
        self._ensure_published()
        processes = np.bincount(self.slots.gpu, minlength=self.gpu_count)
        columns: dict[str, list[int]] = {
            "utilization_gpu_pct": self.util_gpu_pct.tolist(),
            "temperature_gpu_c": self.reported_die_c.tolist(),
            "memory_used_mib": self.memory_used_mib.tolist(),
            "power_draw_mw": self.reported_power_mw.tolist(),
            "power_limit_mw": np.rint(self.power_limit_w * 1000.0).astype(np.int64).tolist(),
            "clock_sm_mhz": self.reported_sm_mhz.tolist(),
            "lost": self.lost.astype(np.int64).tolist(),
            "processes": processes.tolist(),
        }
        return {
            "protocol": 1,
            "tick": self.tick,
            "time": self.time,
            "cluster": self.config.to_json(),
            "model_name": self.spec.name,
            "memory_total_mib": self.spec.memory_total_mib,
            "gpus_per_node": self.gpus_per_node,
            "hostnames": list(self.hostnames),
            "columns": columns,
        }

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
        self._refresh_demand()
        if len(self._slot_activity) != len(slots):
            return "the demand table is out of step with the slots"
        recount = np.bincount(slots.gpu, weights=slots.target_mib, minlength=self.gpu_count)
        if np.abs(recount - slots.target_per_gpu).max(initial=0.0) > 0.5:
            return "the per-GPU memory sums are out of step with the slots"
        if not np.array_equal(np.bincount(slots.gpu, minlength=self.gpu_count),
                              slots.processes_per_gpu):  # fmt: skip
            return "the per-GPU process counts are out of step with the slots"
        over = self._target_per_gpu() > self.process_memory_limit_mib + 0.5
        if over.any():
            return f"GPU {int(np.flatnonzero(over)[0])} holds more memory than it has"
        return None

    def _node_record(self, node: int, detail: bool = False) -> records.NodeRecord:
        spec = self.spec
        lo, hi = node * self.gpus_per_node, (node + 1) * self.gpus_per_node
        section = slice(lo, hi)

        def ints(array: npt.NDArray[np.int64]) -> list[int]:
            values: list[int] = array[section].tolist()
            return values

        die, mem = ints(self.reported_die_c), ints(self.reported_memory_c)
        power, instant = ints(self.reported_power_mw), ints(self.reported_instant_mw)
        limit = np.rint(self.power_limit_w[section] * 1000.0).astype(np.int64).tolist()
        memory_power = ints(self.reported_memory_power_mw)
        energy = np.rint(self.energy_j[section] * 1000.0).astype(np.int64).tolist()
        util_gpu, util_mem = ints(self.util_gpu_pct), ints(self.util_mem_pct)
        used = ints(self.memory_used_mib)
        sm, video = ints(self.reported_sm_mhz), ints(self.reported_video_mhz)
        reasons = ints(self.clocks_event_reasons)
        counters = np.rint(self.counters_us[:, section]).astype(np.int64).tolist()
        pcie_tx, pcie_rx = self.reported_pcie_kbps[:, section].tolist()
        nv_tx, nv_rx = self.reported_nvlink_kbps[:, section].tolist()
        nv_tx_total, nv_rx_total = (
            np.rint(self.nvlink_kib_total[:, section]).astype(np.int64).tolist()
        )
        ecc_volatile, ecc_history = ints(self.ecc_volatile), ints(self.ecc_history)
        xid_count, last_xid = ints(self.xid_count), ints(self.last_xid)
        ecc_uncorrected = ints(self.ecc_uncorrected)
        ecc_uncorrected_volatile = ints(self.ecc_uncorrected_volatile)
        lost = self.lost[section].tolist()
        faults = [self.faults_of(g) for g in range(lo, hi)]
        gpus: list[records.GpuRecord] = []
        for k, ident in enumerate(self.identities[lo:hi]):
            gpus.append(
                {
                    "index": ident.local_index,
                    "global_index": ident.global_index,
                    "model": spec.key,
                    "uuid": ident.uuid,
                    "serial": ident.serial,
                    "bus_id": ident.bus_id,
                    "pci_domain": ident.pci_domain,
                    "pci_bus": ident.pci_bus,
                    "pci_device": ident.pci_device,
                    "minor_number": ident.local_index,
                    "module_id": ident.module_id,
                    "board_id": ident.board_id,
                    "pdi": ident.pdi,
                    "pstate": "P0",
                    "temperature_gpu_c": die[k],
                    "temperature_memory_c": mem[k],
                    "power_draw_mw": power[k],
                    "power_instant_mw": instant[k],
                    "power_limit_mw": limit[k],
                    "memory_power_mw": memory_power[k],
                    "energy_mj": energy[k],
                    "utilization_gpu_pct": util_gpu[k],
                    "utilization_memory_pct": util_mem[k],
                    "memory_total_mib": spec.memory_total_mib,
                    "memory_reserved_mib": spec.memory_reserved_mib,
                    "memory_used_mib": used[k],
                    "bar1_used_mib": used[k] + 1,
                    "clock_sm_mhz": sm[k],
                    "clock_memory_mhz": spec.mem_clock_max_mhz,
                    "clock_video_mhz": video[k],
                    "clocks_event_reasons": reasons[k],
                    "clocks_event_counters_us": {
                        name: counters[c][k] for c, name in enumerate(records.COUNTER_NAMES)
                    },
                    "pcie_tx_kbps": pcie_tx[k],
                    "pcie_rx_kbps": pcie_rx[k],
                    "pcie_gen_current": spec.pcie_gen_max,
                    "pcie_width_current": spec.pcie_width_max,
                    "nvlink_tx_kbps": nv_tx[k],
                    "nvlink_rx_kbps": nv_rx[k],
                    "nvlink_tx_kib_total": nv_tx_total[k],
                    "nvlink_rx_kib_total": nv_rx_total[k],
                    "ecc": {
                        "volatile_dram_corrected": ecc_volatile[k],
                        "volatile_dram_uncorrected": ecc_uncorrected_volatile[k],
                        "volatile_sram_corrected": 0,
                        "volatile_sram_uncorrected": 0,
                        "aggregate_dram_corrected": ecc_history[k] + ecc_volatile[k],
                        "aggregate_dram_uncorrected": ecc_uncorrected[k],
                        "aggregate_sram_corrected": 0,
                        "aggregate_sram_uncorrected": 0,
                    },
                    "xid_count": xid_count[k],
                    "last_xid": last_xid[k],
                    "lost": lost[k],
                    "faults": faults[k],
                }
            )
        if detail:
            for record, samples in zip(gpus, self._samples(section), strict=True):
                record["samples"] = samples
        return {
            "index": node,
            "hostname": self.hostnames[node],
            "host": self._host_record(node),
            "gpus": gpus,
            "processes": self._process_records(lo, hi),
        }

    def _host_record(self, node: int) -> records.HostRecord:
        host = self.spec.host
        numa = [
            min(i // host.gpus_per_numa, host.cpu_sockets - 1) for i in range(self.gpus_per_node)
        ]
        cores = host.cores_per_socket
        threads = host.cpu_sockets * cores

        def affinity(socket: int) -> str:
            first = socket * cores
            ranges = [f"{first}-{first + cores - 1}"]
            if host.threads_per_core > 1:
                ranges.append(f"{threads + first}-{threads + first + cores - 1}")
            return ",".join(ranges)

        return {
            "product": host.product,
            "cpu_model": host.cpu_model,
            "logical_cpus": host.logical_cpus,
            "cpu_sockets": host.cpu_sockets,
            "memory_gib": host.memory_gib,
            "gpu_numa_node": numa,
            "gpu_cpu_affinity": [affinity(s) for s in numa],
            **self.host_load.record(node),  # type: ignore[typeddict-item]
        }

    def _process_records(self, lo: int, hi: int) -> list[records.ProcessRecord]:
        on_node = (self.slots.gpu >= lo) & (self.slots.gpu < hi)
        rows: list[records.ProcessRecord] = []
        for slot in np.flatnonzero(on_node).tolist():
            pid = int(self.slots.pid[slot])
            process = self.processes[pid]
            gpu = int(self.slots.gpu[slot])
            sharing = max(1, int(self._slot_count_per_gpu[gpu]))
            rows.append(
                {
                    "pid": pid,
                    "name": process.name,
                    "user": process.user,
                    "gpu_index": gpu - lo,
                    "gpu_uuid": self.identities[gpu].uuid,
                    "used_memory_mib": round(float(self.slots.used_mib[slot])),
                    "type": "C",
                    "phase": process.phase,
                    "host_process": process.is_host_process,
                    # Process samples count kernel time a little short of the
                    # device's (pmon shows 99 % on a saturated GPU, memory lower).
                    "sm_util_pct": int(self.util_gpu_pct[gpu] * PROCESS_SM_SHARE) // sharing,
                    "mem_util_pct": int(self.util_mem_pct[gpu] * PROCESS_MEMORY_SHARE) // sharing,
                }
            )
        rows.sort(key=lambda r: (r["gpu_index"], r["pid"]))
        return rows
