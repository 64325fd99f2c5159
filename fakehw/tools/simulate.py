"""``fakehw simulate``: the physical model run offline through a schedule.

No daemon and no waiting: a simulated clock starts at the schedule's start
and the model is stepped as fast as the machine allows, sampling every
``interval_ms`` exactly as ``nvidia-smi --query-gpu=... --format=csv,nounits
-lms N`` would on real GPUs running that schedule. Every GPU follows the
schedule with a process of its own (one rank per GPU, as DDP runs), all of
them one job, so multi-GPU runs also show NVLink traffic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from fakehw import TYPE_CHECKING
from fakehw.contract.config import ClusterConfig
from fakehw.devices import Cluster
from fakehw.processes import DRIVER_OVERHEAD_MIB
from fakehw.workload import Schedule, ScheduledPhase, ScheduleError, check_start_time

if TYPE_CHECKING:
    from fakehw.contract.snapshot import Snapshot

DEFAULT_QUERY = (
    "timestamp,index,pstate,temperature.gpu,temperature.memory,power.draw,"
    "utilization.gpu,utilization.memory,memory.used,clocks.sm,clocks.mem"
)
MAX_STEP_S = 0.1
FIRST_SIMULATED_PID = 2242
PROCESS_NAME = "python3"


@dataclass(frozen=True)
class SimulationRequest:
    schedule: Schedule
    config: ClusterConfig
    interval_ms: int = 100
    start_time: float | None = None

    @property
    def start(self) -> float:
        if self.start_time is not None:
            return self.start_time
        if self.schedule.start is not None:
            return self.schedule.start
        return time.time()


def check_request(request: SimulationRequest) -> None:
    """Refuse (``ScheduleError``) what the model cannot play: a start outside nvidia-smi's
    calendar, a memory.used the GPU does not have."""
    schedule = request.schedule
    check_start_time(request.start, schedule.duration_s, "the start time")
    spec = request.config.spec
    for number, entry in enumerate(schedule.phases, 1):
        if entry.memory_mib is not None and entry.memory_mib > spec.memory_usable_mib:
            raise ScheduleError(
                f'phase {number}: "memory_mib" {entry.memory_mib} is more than a {spec.name} '
                f"has ({spec.memory_usable_mib} MiB usable)"
            )


def samples(request: SimulationRequest) -> Iterator[Snapshot]:
    """Snapshots of the cluster every ``interval_ms``, from the start to the end."""
    interval_s = request.interval_ms / 1000.0
    substeps = max(1, math.ceil(interval_s / MAX_STEP_S - 1e-9))
    dt_s = interval_s / substeps
    start = request.start
    cluster = Cluster(request.config, start_time=start)
    runner = _ScheduleRunner(cluster, request.schedule, start)
    count = math.floor(request.schedule.duration_s / interval_s + 1e-9) + 1
    runner.apply(start)
    yield cluster.snapshot()
    for _ in range(1, count):
        for _ in range(substeps):
            cluster.step(dt_s)
            runner.apply(cluster.time)
        yield cluster.snapshot()


class _ScheduleRunner:
    """Moves every GPU's process through the schedule as simulated time passes."""

    def __init__(self, cluster: Cluster, schedule: Schedule, start: float) -> None:
        self.cluster = cluster
        self.schedule = schedule
        self.start = start
        self.current: int | None = None
        self.pids = [FIRST_SIMULATED_PID + g for g in range(cluster.gpu_count)]

    def apply(self, now: float) -> None:
        index, entry = self.schedule.phase_at(now - self.start + 1e-9)
        if index == self.current:
            return
        self.current = index
        for pid, gpu in zip(self.pids, range(self.cluster.gpu_count), strict=True):
            self._enter(pid, gpu, entry)

    def _enter(self, pid: int, gpu: int, entry: ScheduledPhase) -> None:
        cluster = self.cluster
        attached = pid in cluster.processes
        if entry.phase == "idle":
            if attached:
                cluster.detach(pid)
            return
        if not attached:
            cluster.attach(pid, PROCESS_NAME, [gpu], job="simulate")
        # A schedule gives memory as the GPU's memory.used; the process holds
        # that minus what the driver keeps while a process is on the GPU.
        memory = None
        if entry.memory_mib is not None:
            memory = max(0, entry.memory_mib - DRIVER_OVERHEAD_MIB)
        cluster.set_phase(pid, entry.phase, memory_mib=memory)
