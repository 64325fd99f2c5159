"""The default ``nvidia-smi`` table, in the 89-column layout of driver 580."""

from __future__ import annotations

from fakehw import TYPE_CHECKING
from fakehw.smi.common import asctime, model_of

if TYPE_CHECKING:
    from fakehw.contract.snapshot import GpuRecord, NodeRecord, ProcessRecord, Snapshot

WIDE_RULE = "+" + "-" * 89 + "+"
GPU_RULE = "+" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+"
GPU_HEADER = (
    "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
    "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n"
    "|                                         |                        |               MIG M. |\n"
    "|=========================================+========================+======================|"
)
PROCESS_HEADER = (
    "| Processes:                                                                              |\n"
    "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |\n"
    "|        ID   ID                                                               Usage      |\n"
    "|=========================================================================================|"
)
NO_PROCESSES = f"{'|  No running processes found':<90}|"
NAME_WIDTH = 31  # the name and its padding before Persistence-M
NAME_LIMIT = 28  # longer names are cut to 24 characters and "..."
PROCESS_NAME_WIDTH = 37


def render(snapshot: Snapshot, node: NodeRecord, gpus: list[GpuRecord]) -> str:
    """The whole table for ``gpus`` of ``node``, ending with a newline."""
    lines = [
        asctime(snapshot["time"]) + "       ",
        WIDE_RULE,
        banner(snapshot),
        GPU_RULE,
        GPU_HEADER,
    ]
    for gpu in gpus:
        lines.extend(gpu_block(snapshot, gpu))
        lines.append(GPU_RULE)
    lines.append("")
    lines.append(WIDE_RULE)
    lines.append(PROCESS_HEADER)
    shown = {g["index"] for g in gpus}
    processes = [p for p in node["processes"] if p["gpu_index"] in shown]
    if processes:
        lines.extend(process_line(p) for p in processes)
    else:
        lines.append(NO_PROCESSES)
    lines.append(WIDE_RULE)
    return "\n".join(lines) + "\n"


def banner(snapshot: Snapshot) -> str:
    smi = snapshot["driver_version"]
    return (
        f"| NVIDIA-SMI {smi:<23}Driver Version: {snapshot['driver_version']:<15}"
        f"CUDA Version: {snapshot['cuda_version']:<9}|"
    )


def short_name(name: str) -> str:
    return name if len(name) <= NAME_LIMIT else name[:24] + "..."


def gpu_block(snapshot: Snapshot, gpu: GpuRecord) -> list[str]:
    model = model_of(snapshot, gpu)
    fan = "N/A" if not model["fan_count"] else "0%"
    power = f"{round(gpu['power_draw_mw'] / 1000)}W"
    cap = f"{round(gpu['power_limit_mw'] / 1000)}W"
    ecc = gpu["ecc"]["volatile_dram_uncorrected"] + gpu["ecc"]["volatile_sram_uncorrected"]
    persistence = "On" if gpu["persistence_mode"] else "Off"
    first = (
        f"| {gpu['index']:>3}  {short_name(model['name']):<{NAME_WIDTH}}{persistence:<4}|"
        f"{gpu['bus_id']:>19} {'Off':>3} |{ecc:>21} |"
    )
    second = (
        f"| {fan:>3}   {gpu['temperature_gpu_c']:>2}C    {gpu['pstate']:<2}{power:>16} / {cap:>5} |"
        f"{gpu['memory_used_mib']:>8}MiB / {gpu['memory_total_mib']:>6}MiB |"
        f"{gpu['utilization_gpu_pct']:>7}%      {'Default':>7} |"
    )
    third = f"|{'':41}|{'':24}|{'Disabled':>21} |"
    return [first, second, third]


def process_line(process: ProcessRecord) -> str:
    name = process["name"]
    if len(name) > PROCESS_NAME_WIDTH:
        name = "..." + name[-(PROCESS_NAME_WIDTH - 3) :]
    memory = f"{process['used_memory_mib']}MiB"
    return (
        f"|  {process['gpu_index']:>3}   N/A  N/A  {process['pid']:>14}  {process['type']:>5}   "
        f"{name:<{PROCESS_NAME_WIDTH}}{memory:>9} |"
    )
