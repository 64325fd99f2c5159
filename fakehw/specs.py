"""The GPU catalog: datasheet facts per model, exactly as nvidia-smi reports them.

Pure data, no physics and no numpy: the viewers import this module. Where the
captures in ``tests/real/`` show a value (H100 80GB HBM3 and H200), it is copied
from them; the other models come from NVIDIA datasheets and public nvidia-smi
captures of the same parts (driver 535-580).

Each model also carries a few *calibration* figures (idle power, steady
temperatures, how hard training pushes against the power cap). They are facts
about how the part behaves in a server, measured on the H100 trace and scaled
from public captures for the others; ``fakehw.thermal`` turns them into model
coefficients.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class HostSpec:
    """The server a GPU model usually lives in (shown by nvitop, topo -m)."""

    product: str
    cpu_model: str
    cpu_sockets: int
    cores_per_socket: int
    threads_per_core: int
    memory_gib: int
    # GPUs attached to each NUMA node, in order: (0, 0, 0, 0, 1, 1, 1, 1) on a DGX.
    gpus_per_numa: int
    # PCI bus numbers of the GPUs of one baseboard, in nvidia-smi order.
    bus_numbers: tuple[int, ...]
    # The compute network: InfiniBand line rate per GPU (one rail per GPU on a DGX:
    # 8 x ConnectX-7 NDR 400 Gb/s on DGX H100, 8 x HDR 200 Gb/s on DGX A100).
    nic_gbits_per_gpu: int = 400

    @property
    def logical_cpus(self) -> int:
        return self.cpu_sockets * self.cores_per_socket * self.threads_per_core


@dataclass(frozen=True)
class TLimitThresholds:
    """Thresholds as nvidia-smi 580 prints them on Hopper: relative to the T.Limit.

    ``base_c`` is the temperature the margin counts down to: "GPU T.Limit Temp"
    shows ``base_c - current``.
    """

    base_c: int
    shutdown_c: int
    slowdown_c: int
    max_operating_c: int
    memory_max_c: int


@dataclass(frozen=True)
class ThermalFit:
    """How a part heats: its two Foster networks and its leakage, fitted on a real trace
    (``bench/calibrate_thermal.py``) or taken from the nearest part that was, and which.

    The die network is driven by the board's power; the HBM network by the board's
    power plus ``memory_heat_weight`` times the memory's own dynamic power (HBM sits
    beside the die under the same cold plate, but its own power heats it most: a
    memory-bound phase at 480 W leaves the HBM warmer than training at 690 W).
    """

    die_pole_shares: tuple[float, float, float]  # of the die's total C/W, per pole
    die_pole_taus_s: tuple[float, float, float]
    memory_pole_shares: tuple[float, float, float]
    memory_pole_taus_s: tuple[float, float, float]
    memory_heat_weight: float
    # Leakage: W per C of die temperature, clocks parked and clocks boosted, on a part
    # of ``reference_tdp_w`` (scaled by TDP for a part of another).
    leak_parked_w_per_c: float
    leak_boosted_w_per_c: float
    reference_tdp_w: float
    source: str  # "measured: <trace>" or "derived: <from what>"

    @property
    def measured(self) -> bool:
        return self.source.startswith("measured")


# bench/calibrate_thermal.py tests/real/h100/load --pin-die 40.6,78.0 --pin-memory
# 43.0,77.5 --memory-span 157 --memory-heat-weight 4.69: die RMS 1.04 C, HBM 0.95 C (the
# trace is too short to see its slowest pole settle, hence the pinned steady states; it
# has no memory-bound phase, hence the H200's k). Leakage from its cooling tails.
H100_FIT = ThermalFit(
    die_pole_shares=(0.3664, 0.3054, 0.3282),
    die_pole_taus_s=(0.21, 9.55, 180.5),
    memory_pole_shares=(0.2839, 0.343, 0.3731),
    memory_pole_taus_s=(0.29, 8.97, 158.3),
    memory_heat_weight=4.69,
    leak_parked_w_per_c=0.4,
    leak_boosted_w_per_c=0.9,
    reference_tdp_w=700.0,
    source="measured: tests/real/h100/load/trace.csv",
)
# bench/calibrate_thermal.py tests/real/h200/load (free fit): die RMS 1.35 C, HBM 0.81 C.
# This host's cold plates pull heat out fast: 87 % of the die's rise comes and goes in
# a third of a second, the rest within 3 s, nothing slower. Leakage: the H100's (the
# die stays too cool here to separate it).
H200_FIT = ThermalFit(
    die_pole_shares=(0.8678, 0.1322, 0.0),
    die_pole_taus_s=(0.36, 2.97, 900.0),
    memory_pole_shares=(0.5515, 0.3265, 0.122),
    memory_pole_taus_s=(0.36, 9.85, 900.0),
    memory_heat_weight=4.687,
    leak_parked_w_per_c=0.4,
    leak_boosted_w_per_c=0.9,
    reference_tdp_w=700.0,
    source="measured: tests/real/h200/load/trace.csv",
)
# The parts without a trace of their own take the H100 SXM's networks (their air or
# liquid cooling is unknown to us), leakage scaled by TDP.
DERIVED_FROM_H100 = replace(H100_FIT, source="derived: the H100 SXM's fit, leakage scaled by TDP")


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. Strings and numbers are what nvidia-smi 580 prints."""

    key: str
    aliases: tuple[str, ...]
    name: str
    architecture: str
    compute_capability: tuple[int, int]
    form_factor: str  # "SXM" or "PCIe"
    memory_type: str
    memory_total_mib: int
    memory_reserved_mib: int
    bar1_total_mib: int
    memory_bus_width_bits: int
    cuda_cores: int
    sm_count: int
    # Power, watts.
    power_default_w: float
    power_min_w: float
    power_max_w: float
    # Clocks, MHz. Current clocks move in steps of ``clock_step_mhz``.
    sm_clock_max_mhz: int
    sm_clock_idle_mhz: int
    clock_step_mhz: int
    mem_clock_max_mhz: int
    mem_clock_min_mhz: int
    video_clock_max_mhz: int
    video_clock_idle_mhz: int
    # Temperature thresholds, C (absolute, as NVML's thresholds report them).
    temp_shutdown_c: int
    temp_slowdown_c: int
    temp_max_operating_c: int
    temp_memory_max_c: int
    # Hopper and later print thresholds relative to the T.Limit (``-q`` shows
    # "GPU T.Limit Temp : 45 C"); ``None`` means the older absolute rows.
    tlimit: TLimitThresholds | None
    # PCI.
    pci_device_id: int
    pci_subsystem_id: int
    pcie_gen_max: int
    pcie_width_max: int
    # NVLink: links per GPU and the per-link rate ``nvidia-smi nvlink -s`` prints.
    nvlink_count: int
    nvlink_link_gbps: float
    # NVLink peers: "all" (NVSwitch baseboard) or "pairs" (bridged PCIe cards).
    nvlink_topology: str
    # Board identity strings.
    vbios_version: str
    board_part_number: str
    gpu_part_number: str
    inforom_image: str
    inforom_oem: str
    inforom_ecc: str
    remapped_rows_banks: int
    fan_count: int  # 0 on passively cooled datacenter parts: fan.speed is [N/A]
    # Dense BF16 tensor throughput (TFLOP/s), for training arithmetic.
    bf16_dense_tflops: float
    host: HostSpec
    host_prefix: str
    # --- calibration figures (see fakehw.thermal) ---
    idle_power_w: float  # no process, clocks parked at sm_clock_idle_mhz
    context_extra_power_w: float  # a CUDA context lifts the clocks: extra draw, no work
    dynamic_power_max_w: float  # full-intensity work at sm_clock_max_mhz, before capping
    idle_temp_c: float  # die, long idle
    load_temp_c: float  # die, steady state at the power cap
    idle_memory_temp_c: float
    load_memory_temp_c: float
    context_mib: int  # a fresh CUDA context (PyTorch) on this part
    free_floor_mib: int  # what a process keeps after torch.cuda.empty_cache()
    memory_power_idle_w: float  # nvidia-smi -q "GPU Memory Power Readings", idle
    memory_power_max_w: float  # ... at 100 % utilization.memory
    memory_bandwidth_gbs: float  # datasheet HBM bandwidth, GB/s
    thermal_fit: ThermalFit

    @property
    def memory_usable_mib(self) -> int:
        return self.memory_total_mib - self.memory_reserved_mib


DGX_H100 = HostSpec(
    product="DGX H100",
    cpu_model="Intel(R) Xeon(R) Platinum 8480C",
    cpu_sockets=2,
    cores_per_socket=56,
    threads_per_core=2,
    memory_gib=2048,
    gpus_per_numa=4,
    bus_numbers=(0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB),
)
HGX_H200 = HostSpec(
    product="HGX H200",
    cpu_model="Intel(R) Xeon(R) Platinum 8568Y+",
    cpu_sockets=2,
    cores_per_socket=48,
    threads_per_core=2,
    memory_gib=2048,
    gpus_per_numa=4,
    bus_numbers=(0x19, 0x3B, 0x4C, 0x5D, 0x9B, 0xBB, 0xCB, 0xDB),
)
DGX_A100 = HostSpec(
    product="DGX A100",
    cpu_model="AMD EPYC 7742 64-Core Processor",
    cpu_sockets=2,
    cores_per_socket=64,
    threads_per_core=2,
    memory_gib=1024,
    gpus_per_numa=4,
    bus_numbers=(0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD),
    nic_gbits_per_gpu=200,
)
PCIE_SERVER = HostSpec(
    product="PCIe GPU server",
    cpu_model="AMD EPYC 9454 48-Core Processor",
    cpu_sockets=2,
    cores_per_socket=48,
    threads_per_core=2,
    memory_gib=1536,
    gpus_per_numa=4,
    bus_numbers=(0x01, 0x21, 0x41, 0x61, 0x81, 0xA1, 0xC1, 0xE1),
    nic_gbits_per_gpu=100,  # two 400G NICs shared by eight cards
)

# Read off the H100 and H200 captures (q.txt: T.Limit 45 C at 42 C).
HOPPER_TLIMIT = TLimitThresholds(
    base_c=87, shutdown_c=-8, slowdown_c=-2, max_operating_c=0, memory_max_c=0
)

H100_SXM = GpuSpec(
    key="h100-sxm",
    aliases=("h100", "h100-80gb", "h100-sxm5", "h100-hbm3"),
    name="NVIDIA H100 80GB HBM3",
    architecture="Hopper",
    compute_capability=(9, 0),
    form_factor="SXM",
    memory_type="HBM3",
    memory_total_mib=81559,
    memory_reserved_mib=480,
    bar1_total_mib=131072,
    memory_bus_width_bits=5120,
    cuda_cores=16896,
    sm_count=132,
    power_default_w=700.0,
    power_min_w=200.0,
    power_max_w=700.0,
    sm_clock_max_mhz=1980,
    sm_clock_idle_mhz=345,
    clock_step_mhz=15,
    mem_clock_max_mhz=2619,
    mem_clock_min_mhz=1593,
    video_clock_max_mhz=1545,
    video_clock_idle_mhz=765,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=87,
    temp_memory_max_c=95,
    tlimit=HOPPER_TLIMIT,
    pci_device_id=0x233010DE,
    pci_subsystem_id=0x16C110DE,
    pcie_gen_max=5,
    pcie_width_max=16,
    nvlink_count=18,
    nvlink_link_gbps=26.562,
    nvlink_topology="all",
    vbios_version="96.00.DA.00.0C",
    board_part_number="695-2G520-0200-000",
    gpu_part_number="2330-885-A1",
    inforom_image="G520.0200.00.05",
    inforom_oem="2.1",
    inforom_ecc="7.16",
    remapped_rows_banks=2560,
    fan_count=0,
    bf16_dense_tflops=989.4,
    host=DGX_H100,
    host_prefix="dgx-h100",
    idle_power_w=71.4,
    context_extra_power_w=49.5,
    dynamic_power_max_w=724.0,
    idle_temp_c=40.6,
    load_temp_c=78.0,
    idle_memory_temp_c=43.0,
    load_memory_temp_c=77.5,
    context_mib=518,
    free_floor_mib=888,
    memory_power_idle_w=40.7,
    memory_power_max_w=200.0,
    memory_bandwidth_gbs=3350.0,
    thermal_fit=H100_FIT,
)

H200 = GpuSpec(
    key="h200",
    aliases=("h200-sxm", "h200-141gb", "h200-hbm3e"),
    name="NVIDIA H200",
    architecture="Hopper",
    compute_capability=(9, 0),
    form_factor="SXM",
    memory_type="HBM3e",
    memory_total_mib=143771,
    memory_reserved_mib=616,
    bar1_total_mib=262144,
    memory_bus_width_bits=6016,
    cuda_cores=16896,
    sm_count=132,
    power_default_w=700.0,
    power_min_w=200.0,
    power_max_w=700.0,
    sm_clock_max_mhz=1980,
    sm_clock_idle_mhz=345,
    clock_step_mhz=15,
    mem_clock_max_mhz=3201,
    mem_clock_min_mhz=2201,
    video_clock_max_mhz=1545,
    video_clock_idle_mhz=765,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=87,
    temp_memory_max_c=95,
    tlimit=HOPPER_TLIMIT,
    pci_device_id=0x233510DE,
    pci_subsystem_id=0x18BF10DE,
    pcie_gen_max=5,
    pcie_width_max=16,
    nvlink_count=18,
    nvlink_link_gbps=26.562,
    nvlink_topology="all",
    vbios_version="96.00.A5.00.1A",
    board_part_number="692-2G520-0282-000",
    gpu_part_number="2335-895-A1",
    inforom_image="G520.0282.02.02",
    inforom_oem="2.1",
    inforom_ecc="7.16",
    remapped_rows_banks=3072,
    fan_count=0,
    bf16_dense_tflops=989.4,
    host=HGX_H200,
    host_prefix="hgx-h200",
    idle_power_w=79.8,  # tests/real/h200/load/trace.csv, idle
    context_extra_power_w=41.7,  # 123.3 W with a context at 40 C
    dynamic_power_max_w=735.0,
    idle_temp_c=38.0,
    load_temp_c=60.5,  # the die network's steady state at 693 W
    idle_memory_temp_c=42.1,
    load_memory_temp_c=60.4,  # training, 41 % utilization.memory
    context_mib=532,
    free_floor_mib=1012,
    memory_power_idle_w=37.4,  # static/q.txt
    memory_power_max_w=245.4,  # load/q_busy.txt: 125.0 W at 42 %
    memory_bandwidth_gbs=4800.0,
    thermal_fit=H200_FIT,
)

H100_PCIE = GpuSpec(
    key="h100-pcie",
    aliases=("h100-pcie-80gb",),
    name="NVIDIA H100 PCIe",
    architecture="Hopper",
    compute_capability=(9, 0),
    form_factor="PCIe",
    memory_type="HBM2e",
    memory_total_mib=81559,
    memory_reserved_mib=480,
    bar1_total_mib=131072,
    memory_bus_width_bits=5120,
    cuda_cores=14592,
    sm_count=114,
    power_default_w=350.0,
    power_min_w=200.0,
    power_max_w=350.0,
    sm_clock_max_mhz=1755,
    sm_clock_idle_mhz=345,
    clock_step_mhz=15,
    mem_clock_max_mhz=1593,
    mem_clock_min_mhz=1593,
    video_clock_max_mhz=1545,
    video_clock_idle_mhz=765,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=87,
    temp_memory_max_c=95,
    tlimit=HOPPER_TLIMIT,
    pci_device_id=0x233110DE,
    pci_subsystem_id=0x162610DE,
    pcie_gen_max=5,
    pcie_width_max=16,
    nvlink_count=12,
    nvlink_link_gbps=26.562,
    nvlink_topology="pairs",
    vbios_version="96.00.30.00.02",
    board_part_number="692-2G520-0200-000",
    gpu_part_number="2331-882-A1",
    inforom_image="G520.0200.00.01",
    inforom_oem="2.1",
    inforom_ecc="7.16",
    remapped_rows_banks=2560,
    fan_count=0,
    bf16_dense_tflops=756.0,
    host=PCIE_SERVER,
    host_prefix="h100-pcie",
    idle_power_w=47.0,
    context_extra_power_w=30.0,
    dynamic_power_max_w=380.0,
    idle_temp_c=33.0,
    load_temp_c=68.0,
    idle_memory_temp_c=36.0,
    load_memory_temp_c=70.0,
    context_mib=518,
    free_floor_mib=888,
    memory_power_idle_w=28.0,
    memory_power_max_w=95.0,
    memory_bandwidth_gbs=2000.0,
    thermal_fit=DERIVED_FROM_H100,
)

H100_NVL = GpuSpec(
    key="h100-nvl",
    aliases=("h100nvl", "h100-94gb"),
    name="NVIDIA H100 NVL",
    architecture="Hopper",
    compute_capability=(9, 0),
    form_factor="PCIe",
    memory_type="HBM3",
    memory_total_mib=95830,
    memory_reserved_mib=512,
    bar1_total_mib=131072,
    memory_bus_width_bits=6144,
    cuda_cores=16896,
    sm_count=132,
    power_default_w=400.0,
    power_min_w=200.0,
    power_max_w=400.0,
    sm_clock_max_mhz=1785,
    sm_clock_idle_mhz=345,
    clock_step_mhz=15,
    mem_clock_max_mhz=2619,
    mem_clock_min_mhz=1593,
    video_clock_max_mhz=1545,
    video_clock_idle_mhz=765,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=87,
    temp_memory_max_c=95,
    tlimit=HOPPER_TLIMIT,
    pci_device_id=0x232110DE,
    pci_subsystem_id=0x167410DE,
    pcie_gen_max=5,
    pcie_width_max=16,
    nvlink_count=12,
    nvlink_link_gbps=26.562,
    nvlink_topology="pairs",
    vbios_version="96.00.81.00.01",
    board_part_number="692-2G520-0210-000",
    gpu_part_number="2321-882-A1",
    inforom_image="G520.0210.00.01",
    inforom_oem="2.1",
    inforom_ecc="7.16",
    remapped_rows_banks=2560,
    fan_count=0,
    bf16_dense_tflops=835.0,
    host=PCIE_SERVER,
    host_prefix="h100-nvl",
    idle_power_w=62.0,
    context_extra_power_w=32.0,
    dynamic_power_max_w=430.0,
    idle_temp_c=35.0,
    load_temp_c=74.0,
    idle_memory_temp_c=38.0,
    load_memory_temp_c=74.0,
    context_mib=518,
    free_floor_mib=888,
    memory_power_idle_w=32.0,
    memory_power_max_w=120.0,
    memory_bandwidth_gbs=3900.0,
    thermal_fit=DERIVED_FROM_H100,
)

A100_SXM4_80GB = GpuSpec(
    key="a100-sxm4-80gb",
    aliases=("a100-80gb", "a100", "a100-sxm-80gb"),
    name="NVIDIA A100-SXM4-80GB",
    architecture="Ampere",
    compute_capability=(8, 0),
    form_factor="SXM",
    memory_type="HBM2e",
    memory_total_mib=81920,
    memory_reserved_mib=415,
    bar1_total_mib=131072,
    memory_bus_width_bits=5120,
    cuda_cores=6912,
    sm_count=108,
    power_default_w=400.0,
    power_min_w=100.0,
    power_max_w=400.0,
    sm_clock_max_mhz=1410,
    sm_clock_idle_mhz=210,
    clock_step_mhz=15,
    mem_clock_max_mhz=1593,
    mem_clock_min_mhz=1593,
    video_clock_max_mhz=1290,
    video_clock_idle_mhz=585,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=85,
    temp_memory_max_c=95,
    tlimit=None,
    pci_device_id=0x20B210DE,
    pci_subsystem_id=0x147F10DE,
    pcie_gen_max=4,
    pcie_width_max=16,
    nvlink_count=12,
    nvlink_link_gbps=25.0,
    nvlink_topology="all",
    vbios_version="92.00.45.00.06",
    board_part_number="692-2G506-0210-003",
    gpu_part_number="20B2-895-A1",
    inforom_image="G506.0210.00.03",
    inforom_oem="2.0",
    inforom_ecc="6.16",
    remapped_rows_banks=640,
    fan_count=0,
    bf16_dense_tflops=312.0,
    host=DGX_A100,
    host_prefix="dgx-a100",
    idle_power_w=61.0,
    context_extra_power_w=24.0,
    dynamic_power_max_w=390.0,
    idle_temp_c=32.0,
    load_temp_c=68.0,
    idle_memory_temp_c=40.0,
    load_memory_temp_c=72.0,
    context_mib=478,
    free_floor_mib=812,
    memory_power_idle_w=30.0,
    memory_power_max_w=110.0,
    memory_bandwidth_gbs=2039.0,
    thermal_fit=DERIVED_FROM_H100,
)

A100_SXM4_40GB = GpuSpec(
    key="a100-sxm4-40gb",
    aliases=("a100-40gb", "a100-sxm-40gb"),
    name="NVIDIA A100-SXM4-40GB",
    architecture="Ampere",
    compute_capability=(8, 0),
    form_factor="SXM",
    memory_type="HBM2",
    memory_total_mib=40960,
    memory_reserved_mib=415,
    bar1_total_mib=65536,
    memory_bus_width_bits=5120,
    cuda_cores=6912,
    sm_count=108,
    power_default_w=400.0,
    power_min_w=100.0,
    power_max_w=400.0,
    sm_clock_max_mhz=1410,
    sm_clock_idle_mhz=210,
    clock_step_mhz=15,
    mem_clock_max_mhz=1215,
    mem_clock_min_mhz=1215,
    video_clock_max_mhz=1290,
    video_clock_idle_mhz=585,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=85,
    temp_memory_max_c=95,
    tlimit=None,
    pci_device_id=0x20B010DE,
    pci_subsystem_id=0x134F10DE,
    pcie_gen_max=4,
    pcie_width_max=16,
    nvlink_count=12,
    nvlink_link_gbps=25.0,
    nvlink_topology="all",
    vbios_version="92.00.19.00.10",
    board_part_number="692-2G506-0200-003",
    gpu_part_number="20B0-884-A1",
    inforom_image="G506.0200.00.04",
    inforom_oem="2.0",
    inforom_ecc="6.16",
    remapped_rows_banks=640,
    fan_count=0,
    bf16_dense_tflops=312.0,
    host=DGX_A100,
    host_prefix="dgx-a100",
    idle_power_w=54.0,
    context_extra_power_w=22.0,
    dynamic_power_max_w=380.0,
    idle_temp_c=31.0,
    load_temp_c=66.0,
    idle_memory_temp_c=38.0,
    load_memory_temp_c=70.0,
    context_mib=478,
    free_floor_mib=812,
    memory_power_idle_w=25.0,
    memory_power_max_w=90.0,
    memory_bandwidth_gbs=1555.0,
    thermal_fit=DERIVED_FROM_H100,
)

A100_PCIE_80GB = GpuSpec(
    key="a100-pcie-80gb",
    aliases=("a100-pcie", "a100-80gb-pcie"),
    name="NVIDIA A100 80GB PCIe",
    architecture="Ampere",
    compute_capability=(8, 0),
    form_factor="PCIe",
    memory_type="HBM2e",
    memory_total_mib=81920,
    memory_reserved_mib=415,
    bar1_total_mib=131072,
    memory_bus_width_bits=5120,
    cuda_cores=6912,
    sm_count=108,
    power_default_w=300.0,
    power_min_w=150.0,
    power_max_w=300.0,
    sm_clock_max_mhz=1410,
    sm_clock_idle_mhz=210,
    clock_step_mhz=15,
    mem_clock_max_mhz=1512,
    mem_clock_min_mhz=1512,
    video_clock_max_mhz=1275,
    video_clock_idle_mhz=585,
    temp_shutdown_c=92,
    temp_slowdown_c=89,
    temp_max_operating_c=85,
    temp_memory_max_c=95,
    tlimit=None,
    pci_device_id=0x20B510DE,
    pci_subsystem_id=0x153310DE,
    pcie_gen_max=4,
    pcie_width_max=16,
    nvlink_count=12,
    nvlink_link_gbps=25.0,
    nvlink_topology="pairs",
    vbios_version="92.00.90.00.04",
    board_part_number="900-21001-0020-100",
    gpu_part_number="20B5-895-A1",
    inforom_image="1001.0230.00.03",
    inforom_oem="2.0",
    inforom_ecc="6.16",
    remapped_rows_banks=640,
    fan_count=0,
    bf16_dense_tflops=312.0,
    host=PCIE_SERVER,
    host_prefix="a100-pcie",
    idle_power_w=45.0,
    context_extra_power_w=20.0,
    dynamic_power_max_w=310.0,
    idle_temp_c=33.0,
    load_temp_c=70.0,
    idle_memory_temp_c=42.0,
    load_memory_temp_c=74.0,
    context_mib=478,
    free_floor_mib=812,
    memory_power_idle_w=22.0,
    memory_power_max_w=80.0,
    memory_bandwidth_gbs=1935.0,
    thermal_fit=DERIVED_FROM_H100,
)

CATALOG: tuple[GpuSpec, ...] = (
    A100_SXM4_40GB,
    A100_SXM4_80GB,
    A100_PCIE_80GB,
    H100_SXM,
    H100_PCIE,
    H100_NVL,
    H200,
)

DEFAULT_MODEL = H100_SXM


class UnknownGpuModel(ValueError):
    """Raised by :func:`lookup` with a message that lists what is known."""


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", "-").split())


def lookup(name_or_alias: str) -> GpuSpec:
    """Find a model by its exact nvidia-smi name (any case) or a short alias.

    >>> lookup("h100").name
    'NVIDIA H100 80GB HBM3'
    >>> lookup("nvidia a100-sxm4-80gb").key
    'a100-sxm4-80gb'
    """
    wanted = _normalise(name_or_alias)
    for spec in CATALOG:
        names = (spec.key, spec.name, *spec.aliases)
        if wanted in {_normalise(n) for n in names}:
            return spec
    choices = [n for spec in CATALOG for n in (spec.key, *spec.aliases)]
    close = difflib.get_close_matches(wanted, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownGpuModel(
        f"unknown GPU model {name_or_alias!r}.{hint} "
        f"Known models: {', '.join(spec.key for spec in CATALOG)} "
        "(or their exact nvidia-smi names; `fakehw models` lists all)."
    )


_CALIBRATION_FIELDS = frozenset(
    {
        "host", "host_prefix", "aliases", "idle_power_w", "context_extra_power_w",
        "dynamic_power_max_w", "idle_temp_c", "load_temp_c", "idle_memory_temp_c",
        "load_memory_temp_c", "context_mib", "free_floor_mib", "memory_power_idle_w",
        "memory_power_max_w", "memory_bandwidth_gbs", "thermal_fit",
    }
)  # fmt: skip


def model_record(spec: GpuSpec) -> dict[str, Any]:
    """The datasheet part of a catalog entry, as snapshots carry it to viewers."""
    data = {k: v for k, v in asdict(spec).items() if k not in _CALIBRATION_FIELDS}
    data["compute_capability"] = f"{spec.compute_capability[0]}.{spec.compute_capability[1]}"
    return data
