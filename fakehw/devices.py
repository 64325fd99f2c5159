"""The cluster: every GPU's state as numpy arrays, and the tick that advances it.

``Cluster.step(dt)`` advances the whole cluster at once: the demand of the processes
(``fakehw.workload``, from the process table of ``fakehw.processes``), power, clocks
and heat (``fakehw.thermal``), utilization, traffic, and each process's memory moving
in allocator-sized steps toward its target. ``Cluster.snapshot()`` hands the state to
``fakehw.publish`` for plain records (``fakehw.contract.snapshot``). Nothing here
renders anything or touches a socket.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Unpack

import numpy as np
import numpy.typing as npt

from fakehw import faults, noise
from fakehw.contract import snapshot as records
from fakehw.contract.config import ClusterConfig
from fakehw.contract.identity import GpuIdentity, gpu_identities, hostname
from fakehw.hostload import HostLoad
from fakehw.processes import (
    DRIVER_OVERHEAD_MIB,
    AttachedProcess,
    AttachOptions,
    ClusterError,
    PhaseOptions,
    ProcessTable,
    SlotTable,
)
from fakehw.publish import Publisher
from fakehw.thermal import (
    ClockTable,
    FloatArray,
    ThermalCoefficients,
    cap_target_w,
    capped_clock_mhz,
    dynamic_power_w,
    foster_step,
    memory_dynamic_power_w,
    memory_heat_w,
    pole_decay,
    static_power_w,
    steady_rise_c,
)
from fakehw.workload import (
    KERNEL_FIELDS,
    KERNEL_PIPES,
    PHASES,
    TRAIN_INTENSITY_CYCLE,
    TRAIN_MEMORY_CYCLE,
    memory_demand_scale,
)

BoolArray = npt.NDArray[np.bool_]

# NVML refreshes utilization every 200 ms on Hopper (values change in pairs at
# a 100 ms sampling rate in the trace).
UTILIZATION_PERIOD_S = 0.2
POWER_AVERAGE_WINDOW_S = 1.0
ALLOCATION_GRANULE_MIB = 2
# Idle PCIe chatter, KB/s, as nvidia-smi -q shows on an idle H100.
IDLE_PCIE_TX_KBPS = 920.0
IDLE_PCIE_RX_KBPS = 580.0
POWER_SENSOR_NOISE_W = 0.12
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
# Each phase's kernel mix (DCGM's profiling ratios), a row per phase.
_KERNEL_TABLE: FloatArray = np.array(
    [[getattr(profile.kernels, name) for name in KERNEL_FIELDS] for profile in PHASES.values()]
)


class Cluster:
    """All GPUs of all nodes, advanced together.

    One concept, hence its length: the GPUs' state as arrays and the tick that advances
    them (their fixed spread, the demand the processes make, power, clocks, heat,
    utilization, traffic, in one fixed order of random draws). What is not the tick is
    elsewhere and only called from here: the process table (``fakehw.processes``),
    faults (``fakehw.faults``), the records clients read (``fakehw.publish``) and what
    outlives a restart (``fakehw.persist``).
    """

    def __init__(self, config: ClusterConfig, start_time: float) -> None:
        self.config = config.validated()
        self.spec = self.config.spec
        # A phase's memory activity is given for an H100 SXM; on this part, scaled.
        self.memory_demand_scale = memory_demand_scale(self.spec)
        self.coefficients = ThermalCoefficients.for_spec(
            self.spec, min(1.0, PHASES["train"].memory_activity * self.memory_demand_scale)
        )
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
        self._rng = np.random.default_rng([self.config.seed, 0x6A11])
        self.table = ProcessTable(self.spec, self.gpu_count, self._rng)
        self.publisher = Publisher(self)
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
        # nvidia-smi -lgc / nvmlDeviceSetGpuLockedClocks: the highest SM clock a GPU may
        # run at (inf: unlocked); a power cap or a slowdown can still hold it lower
        self.locked_sm_max_mhz = np.full(n, np.inf)
        # nvmlDeviceSetMemoryLockedClocks: the memory clock, one of the supported ones
        self.memory_clock_mhz = np.full(n, float(spec.mem_clock_max_mhz))
        # nvidia-smi -pm / nvmlDeviceSetPersistenceMode (on, as on a DGX)
        self.persistence_mode = np.ones(n, dtype=bool)
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
        self.kernel_activity = np.zeros((len(KERNEL_FIELDS), n))
        self.has_context = np.zeros(n, dtype=bool)
        self._energy_window: deque[tuple[float, FloatArray]] = deque()
        # As if the GPU had drawn its current power for the last second.
        past_energy = self.energy_j - self.power_w * POWER_AVERAGE_WINDOW_S
        self._energy_window.append((self.time - POWER_AVERAGE_WINDOW_S, past_energy))
        self._decay_cache: dict[float, tuple[FloatArray, FloatArray]] = {}
        self.util_history = np.zeros((UTILIZATION_HISTORY, 2, n), dtype=np.uint8)
        self.util_history_times = np.full(UTILIZATION_HISTORY, np.nan)
        self._util_history_due = self.time
        self._util_history_count = 0
        self.power_history = np.zeros((POWER_HISTORY, n), dtype=np.float32)
        self.power_history_times = np.full(POWER_HISTORY, np.nan)
        self._publish_memory()
        # what the last tick read: 1 s average power, instantaneous power, sensor noise
        self.raw_readings = (self.power_w, self.power_w, np.zeros((2, n)))

    def _init_host(self) -> None:
        """The servers around the GPUs (own random stream: the GPUs' is unchanged)."""
        self._host_rng = np.random.default_rng([self.config.seed, 0x4057])
        host = self.spec.host
        boot = self.time - self._host_rng.uniform(3 * 86400, 40 * 86400, self.nodes)
        self.host_load = HostLoad(
            self.nodes, host.logical_cpus, host.memory_gib, boot, self._host_rng
        )

    # -------------------------------------------------------------- processes
    @property
    def processes(self) -> dict[int, AttachedProcess]:
        """pid -> the process (the table's, to read: changes go through the methods below)."""
        return self.table.processes

    @property
    def slots(self) -> SlotTable:
        """One row per (process, GPU), as the tick reads them."""
        return self.table.slots

    def attach(
        self, pid: int, name: str, gpus: Sequence[int], **options: Unpack[AttachOptions]
    ) -> AttachedProcess:
        """Put a process on GPUs from now on; ``options`` are ``ProcessTable.attach``'s
        (user, watch_pid, watch_started, memory_plan, phase, job)."""
        process = self.table.attach(pid, name, gpus, now=self.time, **options)
        self._slots_changed()
        return process

    def set_phase(self, pid: int, phase: str, **options: Unpack[PhaseOptions]) -> None:
        """Change what a process does on all its GPUs from now on (all or nothing);
        ``options`` are ``ProcessTable.set_phase``'s (memory_mib, cycle_s, intensity)."""
        self.table.set_phase(pid, phase, now=self.time, **options)
        self._slots_changed()

    def detach(self, pid: int) -> AttachedProcess:
        """The process ended: its memory is freed at once, as the driver does."""
        process = self.table.get(pid)
        self.detach_many([pid])
        return process

    def detach_many(self, pids: Sequence[int]) -> list[int]:
        """These processes ended (those of them attached): freed together, at the cost
        of one detach. Returns the PIDs that were attached."""
        gone = self.table.detach_many(pids)
        if gone:
            self._slots_changed()
            self._publish_memory()
        return gone

    @property
    def process_memory_limit_mib(self) -> int:
        """What a GPU leaves to its processes: usable memory less the driver's share."""
        return self.table.process_memory_limit_mib

    def consistency_problem(self) -> str | None:
        """What is wrong with the process table or the demand table built from it."""
        problem = self.table.consistency_problem()
        if problem is not None:
            return problem
        self._refresh_demand()
        if len(self._slot_activity) != len(self.slots):
            return "the demand table is out of step with the slots"
        return None

    # ---------------------------------------------------------------- restart
    def resume_at(self, saved_time: float) -> None:
        """Carry on from the instant a saved state was taken (``fakehw.persist``
        has put its arrays back): the caller steps the model through the gap
        (``Simulator.advance_to``), the surviving processes carrying on in their
        phases, so heat and energy evolve as they would have. A change made after the
        last save is lost; the energy counter gets the most that interval could have
        drawn on top, so that no reading a client saw before the kill is ever undercut."""
        unsaved_s = min(max(0.0, self.time - saved_time), MAX_UNSAVED_STATE_S)
        if 0 < saved_time < self.time:
            self.time = saved_time
        self.energy_j = self.energy_j + self.power_limit_w * unsaved_s
        self._energy_window.clear()
        before = self.energy_j - self.power_w * POWER_AVERAGE_WINDOW_S
        self._energy_window.append((self.time - POWER_AVERAGE_WINDOW_S, before))
        self._util_history_due = self.time

    def readings_restored(self) -> None:
        """After a restore: the first snapshot shows the restored readings."""
        self._publish_memory()
        n = self.gpu_count
        self.raw_readings = (self.power_w.copy(), self.power_w.copy(), np.zeros((2, n)))
        self.publisher.stale()

    def inject(self, gpu: int, fault: str, count: int = 1) -> list[str]:
        """Make a GPU (global index) misbehave (see ``fakehw.faults``); returns its
        faults now. A refused request changes nothing."""
        if not 0 <= gpu < self.gpu_count:
            raise ClusterError(f"GPU {gpu} does not exist (0-{self.gpu_count - 1})")
        faults.inject(self, gpu, fault, count)
        self.publisher.stale()
        return faults.active(self, gpu)

    def set_power_limit(self, gpu: int, watts: float) -> None:
        """``nvidia-smi -pl`` / ``nvmlDeviceSetPowerManagementLimit``: GPU ``gpu``'s
        (global index) enforced limit, within the board's range; the power cap, and with
        it clocks and temperatures, follow from the next tick."""
        if not 0 <= gpu < self.gpu_count:
            raise ClusterError(f"GPU {gpu} does not exist (0-{self.gpu_count - 1})")
        low, high = self.spec.power_min_w, self.spec.power_max_w
        if not low <= watts <= high:
            raise ClusterError(f"a power limit of {watts:g} W is outside {low:g}-{high:g} W")
        self.power_limit_w[gpu] = watts
        self.publisher.stale()

    def lock_sm_clock(self, gpu: int, max_mhz: float | None) -> None:
        """``nvmlDeviceSetGpuLockedClocks``: GPU ``gpu``'s (global index) SM clock held at
        or below ``max_mhz``, one of the clocks it supports; None unlocks it."""
        if not 0 <= gpu < self.gpu_count:
            raise ClusterError(f"GPU {gpu} does not exist (0-{self.gpu_count - 1})")
        spec = self.spec
        if max_mhz is not None and not spec.sm_clock_idle_mhz <= max_mhz <= spec.sm_clock_max_mhz:
            raise ClusterError(f"an SM clock of {max_mhz:g} MHz is outside "
                               f"{spec.sm_clock_idle_mhz}-{spec.sm_clock_max_mhz} MHz")  # fmt: skip
        self.locked_sm_max_mhz[gpu] = np.inf if max_mhz is None else max_mhz
        self.publisher.stale()

    def lock_memory_clock(self, gpu: int, max_mhz: float | None) -> None:
        """``nvmlDeviceSetMemoryLockedClocks``: GPU ``gpu``'s (global index) memory clock
        held at the highest supported memory clock at or below ``max_mhz``; None resets
        it. The memory's power and bandwidth scale with it."""
        if not 0 <= gpu < self.gpu_count:
            raise ClusterError(f"GPU {gpu} does not exist (0-{self.gpu_count - 1})")
        low, high = self.spec.mem_clock_min_mhz, self.spec.mem_clock_max_mhz
        if max_mhz is None:
            clock = high
        elif max_mhz < low:
            raise ClusterError(f"a memory clock of {max_mhz:g} MHz is below {low} MHz")
        else:
            clock = high if max_mhz >= high else low  # the supported clocks: max, min
        self.memory_clock_mhz[gpu] = float(clock)
        self.publisher.stale()

    def set_persistence_mode(self, gpu: int, enabled: bool) -> None:
        """``nvidia-smi -pm`` / ``nvmlDeviceSetPersistenceMode`` of GPU ``gpu``."""
        if not 0 <= gpu < self.gpu_count:
            raise ClusterError(f"GPU {gpu} does not exist (0-{self.gpu_count - 1})")
        self.persistence_mode[gpu] = enabled
        self.publisher.stale()

    def memory_clock_share(self) -> FloatArray:
        """Each GPU's memory clock as a share of its maximum (1.0 unless locked lower)."""
        share: FloatArray = self.memory_clock_mhz / float(self.spec.mem_clock_max_mhz)
        return share

    def faults_of(self, gpu: int) -> list[str]:
        """The faults GPU ``gpu`` (global index) has now."""
        return faults.active(self, gpu)

    def _slots_changed(self) -> None:
        """After an attach, phase change or detach: what the next check needs now, and
        the demand table marked for a rebuild before the next tick (a job attaching
        8,192 processes rebuilds it once, not 8,192 times)."""
        self.has_context = self.slots.processes_per_gpu > 0
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

        self._slot_kernels = _KERNEL_TABLE[phase]  # (slots, KERNEL_FIELDS)
        self._slot_activity = table["activity"][phase]
        self._slot_alloc_activity = table["activity_while_allocating"][phase]
        self._slot_intensity = table["intensity"][phase] * per_process(
            [p.intensity_scale for p in procs]
        )
        self._slot_intensity_jitter = table["intensity_jitter"][phase]
        self._slot_memory_activity = table["memory_activity"][phase] * self.memory_demand_scale
        self._slot_memory_jitter = table["memory_activity_jitter"][phase] * self.memory_demand_scale
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
        # A memory clock locked lower moves the same bytes in more time: busier memory,
        # and at most its share of the bandwidth.
        memory_share = self.memory_clock_share()
        memory_load = np.bincount(gpu, weights=mem_slot, minlength=n)
        memory_activity = np.minimum(1.0, memory_load / memory_share)
        bandwidth_lost = np.minimum(1.0, memory_load) - memory_activity * memory_share
        self.activity, self.memory_activity = activity, memory_activity
        # DCGM's profiling ratios: each slot's kernel mix while it runs, summed per GPU
        # (the pipes' shares follow the work's fluctuations: the optimizer step's lull)
        nominal = activity_slot * self._slot_intensity
        pipes = np.where(nominal > 1e-9, work_slot / np.maximum(nominal, 1e-9), 1.0)
        self.kernel_activity = np.minimum(1.0, np.stack([
            np.bincount(gpu, weights=activity_slot * self._slot_kernels[:, k]
                        * (pipes if name in KERNEL_PIPES else 1.0), minlength=n)
            for k, name in enumerate(KERNEL_FIELDS)
        ]))  # fmt: skip

        self.intensity_drift = noise.ou_step(self.intensity_drift, dt_s, 30.0, 0.015, normal[0])
        demand_w = work * self.dynamic_max_w * (1.0 + self.intensity_drift)

        die_c = self.die_temp_c()
        static_w = static_power_w(
            die_c,
            self.has_context,
            self.idle_power_w,
            self.context_extra_w,
            spec.idle_temp_c,
            self.coefficients,
        )
        # HBM's dynamic power follows the bytes it moves: what a memory clock locked too
        # low for the work cannot move leaves the board's power (the cap gives it to SMs).
        static_w = static_w - memory_dynamic_power_w(spec, bandwidth_lost, 1.0)
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
        ceiling = np.minimum(ceiling, self.locked_sm_max_mhz)
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
        memory_w = memory_dynamic_power_w(spec, memory_activity, memory_share)
        memory_heat = memory_heat_w(power, memory_w, self.coefficients)
        self.memory_rise_c = foster_step(
            self.memory_rise_c, memory_heat, self.memory_gains, memory_decay
        )
        self.node_ambient_drift_c = noise.ou_step(
            self.node_ambient_drift_c, dt_s, 900.0, 0.4, rng.standard_normal(self.nodes)
        )

        self.energy_j = self.energy_j + power * dt_s
        average_w = self._average_power_w()
        reasons = np.zeros(n, dtype=np.int64)
        # "GPU idle": clocks parked for want of a context (with one they stay up, and
        # the driver reports no reason while nothing runs: tests/real/h200/load/)
        reasons |= np.where(self.has_context, 0, records.REASON_GPU_IDLE)
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
        self.counters_us[4] += np.where(self.fault_brake, dt_s * 1e6, 0)

        self._sample_utilization(dt_s, activity, memory_activity)
        self._record_history(power)
        self._traffic(dt_s, ramping, normal[4:7])
        self.raw_readings = (average_w, power, normal[2:4].copy())
        self.publisher.stale()

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
        self.power_history[slot] = power
        self.power_history_times[slot] = self.time
        if self.time >= self._util_history_due - 1e-6:
            self._util_history_due += UTILIZATION_PERIOD_S
            if self._util_history_due < self.time:  # after a long step
                self._util_history_due = self.time + UTILIZATION_PERIOD_S
            slot = self._util_history_count % UTILIZATION_HISTORY
            self._util_history_count += 1
            self.util_history[slot, 0] = self.util_gpu_pct
            self.util_history[slot, 1] = self.util_mem_pct
            self.util_history_times[slot] = self.time

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

    def die_temp_c(self) -> FloatArray:
        ambient = (
            self.coefficients.ambient_die_c
            + self.ambient_offset_c
            + self.node_ambient_drift_c[self.node_of_gpu]
        )
        result: FloatArray = ambient + self.die_rise_c.sum(axis=0)
        return result

    def memory_temp_c(self) -> FloatArray:
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
        return self.publisher.snapshot(wanted, detail)

    def summary(self) -> records.ClusterSummary:
        """A few figures per GPU for the whole cluster, as columns (a few bytes a GPU):
        what a cluster-wide view draws where a full snapshot would be megabytes."""
        return self.publisher.summary()
