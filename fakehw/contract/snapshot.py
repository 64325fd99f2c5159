"""The snapshot: everything a viewer may show about the cluster at one instant.

This is the contract between the physics (which fills it, once per tick) and
every front end (which only formats it). Values are already what NVML would
return: whole degrees, milliwatts, MiB, MHz, percent. So two viewers reading
the same snapshot can never disagree, and none of them needs numpy.

See ``docs/protocol.md`` for the wire format around it.
"""

from __future__ import annotations

from fakehw import TYPE_CHECKING

# The faults a GPU can carry (a snapshot's ``faults`` lists those in force), what else
# ``inject`` can do to one (end its processes), and what undoes them, as a reset does:
# the one list the physics, the protocol and every command share.
GPU_FAULTS = ("thermal", "power-brake", "ecc", "ecc-uncorrectable", "xid79")
RANK_CRASH = "rank-crash"
FAULTS = (*GPU_FAULTS, RANK_CRASH)
CLEAR_FAULTS = "clear"

# NVML clock event reason bits (nvmlClocksEventReason*).
REASON_GPU_IDLE = 0x1
REASON_APPLICATIONS_CLOCKS = 0x2
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SYNC_BOOST = 0x10
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40
REASON_HW_POWER_BRAKE = 0x80
REASON_DISPLAY_CLOCKS = 0x100
REASONS_SUPPORTED = 0x1FF

# Clock event counters, as nvidia-smi names them (microseconds while active).
COUNTER_NAMES = (
    "sw_power_cap",
    "sync_boost",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


def cuda_driver_version(cuda_version: str) -> int:
    """``cudaDriverGetVersion``'s number for a version as the snapshot writes it: "13.0"
    is 13000 (NVML's ``nvmlSystemGetCudaDriverVersion``, DCGM's field 5)."""
    major, _, minor = cuda_version.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


def tlimit_margin_c(model: Any, gpu: Any) -> int | None:
    """Degrees left before the slowdown (nvidia-smi's T.Limit, NVML's margin
    temperature), or None for a GPU without T.Limit thresholds."""
    tlimit = model["tlimit"]
    return None if tlimit is None else int(tlimit["base_c"]) - int(gpu["temperature_gpu_c"])


class RemappedRows:
    """What a GPU's row remapper has done (``nvmlDeviceGetRemappedRows``): an A100 or H100
    remaps a row of its HBM for each uncorrectable error in it, and the remapping waits
    for the next reset. Derived from the ECC counts, so nvidia-smi, NVML and DCGM agree."""

    __slots__ = ("correctable", "failure", "pending", "uncorrectable")

    def __init__(self, ecc: EccCounts) -> None:
        self.correctable = 0  # a corrected error remaps nothing
        self.uncorrectable = int(ecc["aggregate_dram_uncorrected"])
        self.pending = ecc["volatile_dram_uncorrected"] > 0  # since the last reset
        self.failure = False  # the banks never run out here

    def bank_histogram(self, banks: int) -> tuple[int, int]:
        """Of a GPU's ``banks``, those with every spare row (nvidia-smi's "Max") and those
        with one used (its "High"): each remapped row takes one."""
        used = min(banks, self.correctable + self.uncorrectable)
        return banks - used, used


if TYPE_CHECKING:
    # Types only: viewers import this module on their start-up path, and
    # defining TypedDicts at run time would cost them the typing module.
    from typing import Any, NotRequired, TypedDict

    class EccCounts(TypedDict):
        volatile_dram_corrected: int
        volatile_dram_uncorrected: int
        volatile_sram_corrected: int
        volatile_sram_uncorrected: int
        aggregate_dram_corrected: int
        aggregate_dram_uncorrected: int
        aggregate_sram_corrected: int
        aggregate_sram_uncorrected: int

    class ProfileRatios(TypedDict):
        """DCGM's profiling fields (DCGM_FI_PROF_*): shares of the cycles, 0-1."""

        gr_engine_active: float  # a kernel runs (utilization.gpu's share of the time)
        sm_active: float
        sm_occupancy: float
        tensor_active: float
        fp64_active: float
        fp32_active: float
        fp16_active: float
        dram_active: float

    class GpuRecord(TypedDict):
        index: int  # on its node, as nvidia-smi numbers it
        global_index: int
        model: str  # key into Snapshot["models"]
        uuid: str
        serial: str
        bus_id: str
        pci_domain: int
        pci_bus: int
        pci_device: int
        minor_number: int
        module_id: int
        board_id: int
        pdi: int
        pstate: str
        persistence_mode: bool  # nvidia-smi -pm (on by default, as on a DGX)
        temperature_gpu_c: int
        temperature_memory_c: int
        power_draw_mw: int  # 1 s average, what power.draw shows
        power_instant_mw: int
        power_limit_mw: int  # enforced limit
        memory_power_mw: int
        energy_mj: int  # since driver load
        utilization_gpu_pct: int
        utilization_memory_pct: int
        memory_total_mib: int
        memory_reserved_mib: int
        memory_used_mib: int
        bar1_used_mib: int
        clock_sm_mhz: int
        clock_memory_mhz: int
        clock_video_mhz: int
        clocks_event_reasons: int
        clocks_event_counters_us: dict[str, int]
        pcie_tx_kbps: int
        pcie_rx_kbps: int
        pcie_gen_current: int
        pcie_width_current: int
        nvlink_tx_kbps: int  # summed over the GPU's links
        nvlink_rx_kbps: int
        nvlink_tx_kib_total: int
        nvlink_rx_kib_total: int
        profile: ProfileRatios
        ecc: EccCounts
        xid_count: int
        last_xid: int
        lost: bool  # fallen off the bus (XID 79): the driver cannot reach it
        faults: list[str]  # injected faults in force ("thermal", "power-brake", ...)
        # Only in snapshots asked for with "detail": per buffer, [duration s,
        # count, max, min, avg] ("gpu_util", "memory_util" in %, "power_mw").
        samples: NotRequired[dict[str, list[float]]]

    class ProcessRecord(TypedDict):
        pid: int
        name: str
        user: str
        gpu_index: int  # on its node
        gpu_uuid: str
        used_memory_mib: int
        type: str  # "C": compute
        phase: str
        sm_util_pct: int
        mem_util_pct: int
        # a process of the daemon's machine (psutil may describe it), or a record
        # standing for one elsewhere (a rank on another node): never looked up locally
        host_process: NotRequired[bool]

    class HostRecord(TypedDict):
        product: str
        cpu_model: str
        logical_cpus: int
        cpu_sockets: int
        memory_gib: int
        gpu_numa_node: list[int]  # NUMA node of each GPU
        gpu_cpu_affinity: list[str]  # "0-55,112-167"
        cpu_util_pct: float  # all logical CPUs, as psutil.cpu_percent()
        load_avg: list[float]  # 1, 5, 15 minutes
        memory_used_mib: int
        memory_total_mib: int
        swap_used_mib: int
        swap_total_mib: int
        boot_time: float  # unix seconds

    class NodeRecord(TypedDict):
        index: int
        hostname: str
        host: HostRecord
        gpus: list[GpuRecord]
        processes: list[ProcessRecord]

    class Snapshot(TypedDict):
        protocol: int
        tick: int
        time: float  # unix seconds of this state
        driver_version: str
        cuda_version: str
        nvml_version: str
        cluster: dict[str, Any]
        models: dict[str, dict[str, Any]]
        nodes: list[NodeRecord]

    class ClusterSummary(TypedDict):
        """The ``summary`` op: per-GPU columns over the whole cluster, in global order."""

        protocol: int
        tick: int
        time: float
        cluster: dict[str, Any]
        model_name: str
        memory_total_mib: int
        gpus_per_node: int
        hostnames: list[str]
        # utilization_gpu_pct, temperature_gpu_c, memory_used_mib, power_draw_mw,
        # power_limit_mw, clock_sm_mhz, lost (0/1), processes (count)
        columns: dict[str, list[int]]
