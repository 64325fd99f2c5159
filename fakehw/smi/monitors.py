"""``nvidia-smi dmon`` and ``pmon``: scrolling per-device and per-process lines.

Column layouts are driver 580's (``tests/real/*/static/dmon_*.txt``,
``pmon_*.txt``, ``load/dmon_trace.txt``), including pmon's header, which the
real tool prints one column off its rows.
"""

from __future__ import annotations

import time

from fakehw import TYPE_CHECKING
from fakehw.contract import snapshot as records

if TYPE_CHECKING:
    from collections.abc import Callable

    from fakehw.contract.snapshot import GpuRecord, NodeRecord, ProcessRecord, Snapshot

# dmon metric groups in the order the real tool prints them, whatever -s says.
# Each column: (name, unit, value of (gpu, previous gpu or None, seconds since)).
Column = tuple[str, str, "Callable[[GpuRecord, GpuRecord | None, float], str]"]


def _pviol(gpu: GpuRecord, previous: GpuRecord | None, elapsed: float) -> str:
    """Share of the interval the power cap held the clocks (%)."""
    if previous is None or elapsed <= 0:
        return "0"
    spent = (
        gpu["clocks_event_counters_us"]["sw_power_cap"]
        - previous["clocks_event_counters_us"]["sw_power_cap"]
    )
    return str(max(0, min(100, round(100 * spent / (elapsed * 1e6)))))


def _tviol(gpu: GpuRecord, previous: GpuRecord | None, elapsed: float) -> str:
    thermal = records.REASON_SW_THERMAL | records.REASON_HW_THERMAL
    return "1" if gpu["clocks_event_reasons"] & thermal else "0"


DMON_GROUPS: dict[str, list[Column]] = {
    "p": [
        ("pwr", "W", lambda g, p, t: str(round(g["power_draw_mw"] / 1000))),
        ("gtemp", "C", lambda g, p, t: str(g["temperature_gpu_c"])),
        ("mtemp", "C", lambda g, p, t: str(g["temperature_memory_c"])),
    ],
    "u": [
        ("sm", "%", lambda g, p, t: str(g["utilization_gpu_pct"])),
        ("mem", "%", lambda g, p, t: str(g["utilization_memory_pct"])),
        ("enc", "%", lambda g, p, t: "0"),
        ("dec", "%", lambda g, p, t: "0"),
        ("jpg", "%", lambda g, p, t: "0"),
        ("ofa", "%", lambda g, p, t: "0"),
    ],
    "c": [
        ("mclk", "MHz", lambda g, p, t: str(g["clock_memory_mhz"])),
        ("pclk", "MHz", lambda g, p, t: str(g["clock_sm_mhz"])),
    ],
    "v": [("pviol", "%", _pviol), ("tviol", "bool", _tviol)],
    "m": [
        ("fb", "MB", lambda g, p, t: str(g["memory_used_mib"])),
        ("bar1", "MB", lambda g, p, t: str(g["bar1_used_mib"])),
        ("ccpm", "MB", lambda g, p, t: "0"),
    ],
    "e": [
        ("sbecc", "errs", lambda g, p, t: str(g["ecc"]["volatile_dram_corrected"])),
        ("dbecc", "errs", lambda g, p, t: str(g["ecc"]["volatile_dram_uncorrected"])),
        ("pci", "errs", lambda g, p, t: "0"),
    ],
    "t": [
        ("rxpci", "MB/s", lambda g, p, t: str(round(g["pcie_rx_kbps"] / 1000))),
        ("txpci", "MB/s", lambda g, p, t: str(round(g["pcie_tx_kbps"] / 1000))),
    ],
}
DMON_DEFAULT = "puc"
DMON_HEADER_EVERY = 44  # data lines between repeated headers, as the real trace shows


class Stamp:
    """The -o D / -o T leading columns of dmon and pmon."""

    def __init__(self, options: str) -> None:
        self.date = "D" in options
        self.clock = "T" in options

    @property
    def any(self) -> bool:
        return self.date or self.clock

    def header(self, first: str, second: str) -> tuple[str, str]:
        names, units = "", ""
        if self.date:
            names, units = names + f"{'#Date':<9}", units + f"{'#YYYYMMDD':<9}"
        if self.clock:
            label = "Time" if self.date else "#Time"
            unit = "HH:MM:SS" if self.date else "#HH:MM:SS"
            names, units = names + f"{label:<9}", units + f"{unit:<9}"
        return names + f"{first:>8} ", units + f"{second:>8} "

    def row(self, unix_time: float, index: int) -> str:
        local = time.localtime(unix_time)
        text = ""
        if self.date:
            text += " " + time.strftime("%Y%m%d", local)
        if self.clock:
            text += " " + time.strftime("%H:%M:%S", local)
        return text + f"{index:>8} "


def dmon_columns(select: str) -> list[Column]:
    """Columns for ``-s``: letters from pucvmet, any order, printed in pucvmet order."""
    unknown = [ch for ch in select if ch not in DMON_GROUPS]
    if unknown or not select:
        raise ValueError(select)
    return [column for group, cols in DMON_GROUPS.items() if group in select for column in cols]


def dmon_header(columns: list[Column], stamp: Stamp) -> list[str]:
    if stamp.any:
        first, second = stamp.header("gpu", "Idx")
    else:
        first, second = "# gpu ", "# Idx "
    return [
        first + "".join(f"{name:>6} " for name, _, _ in columns),
        second + "".join(f"{unit:>6} " for _, unit, _ in columns),
    ]


def dmon_rows(
    snapshot: Snapshot,
    gpus: list[GpuRecord],
    columns: list[Column],
    stamp: Stamp,
    previous: dict[int, GpuRecord],
    elapsed: float,
) -> list[str]:
    rows = []
    for gpu in gpus:
        lead = stamp.row(snapshot["time"], gpu["index"]) if stamp.any else f"{gpu['index']:>5} "
        before = previous.get(gpu["index"])
        rows.append(lead + "".join(f"{read(gpu, before, elapsed):>6} " for _, _, read in columns))
    return rows


PMON_HEADER = (
    "# gpu         pid   type     sm    mem    enc    dec    jpg    ofa",
    "# Idx           #    C/G      %      %      %      %      %      %",
)
PMON_MEMORY_HEADER = ("     fb   ccpm", "     MB     MB")


def pmon_header(memory: bool, utilization: bool, stamp: Stamp) -> list[str]:
    names, units = PMON_HEADER
    if not utilization:
        names, units = names[: names.index("     sm")], units[: units.index("      %")]
    if memory:
        names, units = names + PMON_MEMORY_HEADER[0], units + PMON_MEMORY_HEADER[1]
    names, units = names + "    command ", units + "    name "
    if stamp.any:
        lead_names, lead_units = stamp.header("gpu", "Idx")
        names = lead_names.rstrip() + names[len("# gpu") :]
        units = lead_units.rstrip() + units[len("# Idx") :]
    return [names, units]


def pmon_rows(
    snapshot: Snapshot,
    node: NodeRecord,
    gpus: list[GpuRecord],
    memory: bool,
    utilization: bool,
    stamp: Stamp,
) -> list[str]:
    rows = []
    processes = node["processes"]
    for gpu in gpus:
        lead = stamp.row(snapshot["time"], gpu["index"]) if stamp.any else f"{gpu['index']:>5} "
        mine = [p for p in processes if p["gpu_index"] == gpu["index"]]
        if not mine:
            rows.append(lead + _pmon_cells(None, memory, utilization))
        for process in mine:
            rows.append(lead + _pmon_cells(process, memory, utilization))
    return rows


def _pmon_cells(process: ProcessRecord | None, memory: bool, utilization: bool) -> str:
    if process is None:
        cells = [f"{'-':>10}", f"{'-':>5}"]
        if utilization:
            cells += [f"{'-':>6}"] * 6
        if memory:
            cells += [f"{'-':>6}"] * 2
        return " ".join(cells) + f"    {'-':<15}"
    cells = [f"{process['pid']:>10}", f"{process['type']:>5}"]
    if utilization:
        cells += [f"{process['sm_util_pct']:>6}", f"{process['mem_util_pct']:>6}"]
        cells += [f"{'-':>6}"] * 4
    if memory:
        cells += [f"{process['used_memory_mib']:>6}", f"{0:>6}"]
    command = process["name"].rsplit("/", 1)[-1][:15]
    return " ".join(cells) + f"    {command:<15}"
