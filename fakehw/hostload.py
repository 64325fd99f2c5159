"""What the GPU servers' CPUs and memory do while their GPUs work.

A training rank keeps more than a GPU busy: its Python main thread, data
loader workers and NCCL's proxy threads use host cores, and it holds host
memory (pinned buffers, the dataset's pages, a copy of the weights while
loading or saving). Per node, from the phases of the processes on it, this
model gives CPU utilization, the load averages (exponentially smoothed over
1, 5 and 15 minutes as the Linux kernel does), memory and swap in use, and
the node's boot time. Viewers show a host that fits the GPUs (a DGX, not
the laptop the demo runs on), consistent across every viewer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from fakehw import noise
from fakehw.noise import FloatArray

# Per process, by phase: (cores busy, runnable threads, host memory GiB).
RANK_DEMAND: dict[str, tuple[float, float, float]] = {
    "context": (0.3, 0.6, 5.0),
    "load": (1.6, 2.2, 19.0),
    "train": (3.2, 4.6, 26.0),
    "eval": (2.6, 3.8, 26.0),
    "checkpoint": (1.9, 2.6, 31.0),
    "barrier": (1.0, 1.1, 26.0),
    "free": (0.2, 0.3, 7.0),
}
IDLE_CORES = 0.6  # system daemons, monitoring agents
IDLE_RUNNABLE = 0.3
OS_MEMORY_GIB = 21.0  # kernel, daemons, a container runtime
LOAD_TAUS_S = (60.0, 300.0, 900.0)
CPU_TAU_S = 2.0  # how fast utilization follows a phase change
SWAP_GIB = 8.0


class HostLoad:
    """CPU, load averages and memory of every node, advanced with the GPUs."""

    def __init__(
        self,
        nodes: int,
        logical_cpus: int,
        memory_gib: int,
        boot_times: FloatArray,
        rng: np.random.Generator,
    ) -> None:
        self.nodes = nodes
        self.logical_cpus = logical_cpus
        self.memory_gib = memory_gib
        self.boot_times = boot_times
        self.target_cores = np.full(nodes, IDLE_CORES)
        self.target_runnable = np.full(nodes, IDLE_RUNNABLE)
        self.target_memory_gib = np.full(nodes, OS_MEMORY_GIB)
        self.cores = self.target_cores.copy()
        self.load = np.repeat(self.target_runnable[None, :], 3, axis=0)
        self.memory_gib_used = self.target_memory_gib.copy()
        self.cpu_noise = noise.ou_start(nodes, 0.05, rng)
        # Swap a long-running server has touched once and never given back.
        self.swap_used_gib = rng.uniform(0.0, 0.02, nodes) * SWAP_GIB

    def set_processes(self, placements: Iterable[tuple[int, str]]) -> None:
        """The processes now on each node: (node, phase) per process."""
        cores = np.full(self.nodes, IDLE_CORES)
        runnable = np.full(self.nodes, IDLE_RUNNABLE)
        memory = np.full(self.nodes, OS_MEMORY_GIB)
        for node, phase in placements:
            busy, threads, gib = RANK_DEMAND.get(phase, RANK_DEMAND["context"])
            cores[node] += busy
            runnable[node] += threads
            memory[node] += gib
        self.target_cores = np.minimum(cores, self.logical_cpus)
        self.target_runnable = runnable
        self.target_memory_gib = np.minimum(memory, 0.9 * self.memory_gib)

    def step(self, dt_s: float, normal: FloatArray) -> None:
        """Advance by ``dt_s``; ``normal`` is one standard-normal draw per node."""
        follow = 1.0 - math.exp(-dt_s / CPU_TAU_S)
        self.cores += (self.target_cores - self.cores) * follow
        self.memory_gib_used += (self.target_memory_gib - self.memory_gib_used) * follow
        self.cpu_noise = noise.ou_step(self.cpu_noise, dt_s, 5.0, 0.05, normal)
        for k, tau in enumerate(LOAD_TAUS_S):
            decay = math.exp(-dt_s / tau)
            self.load[k] = self.load[k] * decay + self.target_runnable * (1.0 - decay)

    def cpu_percent(self) -> FloatArray:
        busy = self.cores * (1.0 + self.cpu_noise)
        result: FloatArray = np.clip(100.0 * busy / self.logical_cpus, 0.0, 100.0)
        return result

    def record(self, node: int) -> dict[str, object]:
        """The dynamic part of a node's host record."""
        return {
            "cpu_util_pct": round(float(self.cpu_percent()[node]), 1),
            "load_avg": [round(float(v), 2) for v in self.load[:, node]],
            "memory_used_mib": int(self.memory_gib_used[node] * 1024),
            "memory_total_mib": self.memory_gib * 1024,
            "swap_used_mib": int(self.swap_used_gib[node] * 1024),
            "swap_total_mib": int(SWAP_GIB * 1024),
            "boot_time": float(self.boot_times[node]),
        }
