"""nvitop 1.7.2's panels as lines of styled text, from a snapshot.

The same lines serve ``fake-nvitop -1`` (printed, with ANSI colours on a
terminal) and the live screen (drawn by prompt_toolkit). A line is a list of
``(style, text)`` fragments; styles are words: a colour (``green``, ``cyan``
...) and attributes (``bold``, ``dim``, ``reverse``).

Layouts follow nvitop's: the 79-column device table (with MEM/UTL bars beyond
100 columns), the compact host lines (CPU, MEM, SWP bars, load average,
uptime), and the process table (GPU, PID, USER, GPU-MEM, %SM, %GMBW, %CPU,
%MEM, TIME, COMMAND), checked against ``tests/real/*/*/nvitop_*.txt``.
"""

from __future__ import annotations

import math
import shlex
import time

from fakehw import TYPE_CHECKING
from fakehw.views.procinfo import HostProcess

if TYPE_CHECKING:
    from fakehw.contract.snapshot import GpuRecord, NodeRecord, ProcessRecord, Snapshot

Fragment = tuple[str, str]
Line = list[Fragment]

VERSION = "1.7.2"
KIB, MIB, GIB, TIB, PIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 50
GPU_THRESHOLDS = (10, 75)
MEMORY_THRESHOLDS = (10, 80)
INTENSITY_COLORS = ("green", "yellow", "red")  # light, moderate, heavy

TABLE_TOP = "╒═════════════════════════════════════════════════════════════════════════════╕"
TABLE_SPLIT = "├───────────────────────────────┬──────────────────────┬──────────────────────┤"
TABLE_HEAD = "╞═══════════════════════════════╪══════════════════════╪══════════════════════╡"
TABLE_ROW_SEP = "├───────────────────────────────┼──────────────────────┼──────────────────────┤"
TABLE_BOTTOM = "╘═══════════════════════════════╧══════════════════════╧══════════════════════╛"
HEAD_FULL = (
    "│ GPU  Name        Persistence-M│ Bus-Id        Disp.A │ MIG M.   Uncorr. ECC │",
    "│ Fan  Temp  Perf  Pwr:Usage/Cap│         Memory-Usage │ GPU-Util  Compute M. │",
)
HEAD_COMPACT = "│ GPU Fan Temp Perf Pwr:Usg/Cap │         Memory-Usage │ GPU-Util  Compute M. │"


# ------------------------------------------------------------ formatting
def bytes2human(b: float, min_unit: int = 1) -> str:
    """nvitop's sizes: ``0B``, ``45.52GiB``, ``140.4GiB``."""
    b = round(b)
    if b < KIB and min_unit < KIB:
        return f"{b}B"
    if b < MIB and min_unit <= KIB:
        return f"{round(b / KIB)}KiB"
    if b < 100 * MIB and min_unit <= MIB:
        return f"{round(b / MIB, 2):.2f}MiB"
    if b < 1000 * MIB and min_unit <= MIB:
        return f"{round(b / MIB, 1):.1f}MiB"
    if b < 20 * GIB and min_unit <= MIB:
        return f"{round(b / MIB)}MiB"
    if b < 100 * GIB and min_unit <= GIB:
        return f"{round(b / GIB, 2):.2f}GiB"
    if b < 1000 * GIB and min_unit <= GIB:
        return f"{round(b / GIB, 1):.1f}GiB"
    if b < 100 * TIB and min_unit <= TIB:
        return f"{round(b / TIB, 2):.2f}TiB"
    if b < 1000 * TIB and min_unit <= TIB:
        return f"{round(b / TIB, 1):.1f}TiB"
    return f"{round(b / PIB, 2):.2f}PiB"


def timedelta2human(seconds: float, rounded: bool = False) -> str:
    """``1:14``, ``2:04:09``, ``12.3 days``."""
    days, rest = divmod(int(seconds), 86400)
    if days >= 4 or (rounded and days >= 1):
        return f"{days + rest / 86400:.1f} days"
    hours, rest = divmod(86400 * days + rest, 3600)
    if hours > 0:
        return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{rest // 60:d}:{rest % 60:02d}"


def cut_string(text: str, maxlen: int, padstr: str = "...", align: str = "left") -> str:
    if len(text) <= maxlen:
        return text
    if len(padstr) >= maxlen:
        return padstr[:maxlen]
    if align == "left":
        return text[: maxlen - len(padstr)] + padstr
    return padstr + text[-(maxlen - len(padstr)) :]


def bar_chart(
    prefix: str, percent: float | None, width: int, extra_text: str = "",
    swap_text: bool = False, extra_blank: str = "",
) -> str:  # fmt: skip
    """A labelled bar: ``MEM: ████████▋ 45.52GiB  57.2%`` fitted to ``width``."""
    chart = f"{prefix}: "
    if percent is not None and math.isfinite(percent):
        share = max(0.0, min(percent / 100.0, 1.0))
        quotient, remainder = divmod(max(1, round(8 * (width - len(chart) - 4) * share)), 8)
        chart += "█" * quotient
        if remainder > 0:
            chart += " ▏▎▍▌▋▊▉"[remainder]
        if isinstance(percent, float) and len(f"{chart} {percent:.1f}%") <= width:
            text = f"{percent:.1f}%"
        else:
            text = f"{min(round(percent), 100):d}%".replace("100%", "MAX")
    else:
        text = "N/A"
        if extra_text and swap_text and len(chart) + len(extra_text) + 2 <= width:
            text, extra_text = extra_text, ""
        chart += "░" * (width - len(chart) - len(text) - 1)
    if extra_text:
        if len(f"{chart} {text} {extra_blank}{extra_text}") <= width:
            if swap_text:
                text, extra_text = extra_text, text
            return (
                f"{chart} {text}".ljust(width - len(extra_blank) - len(extra_text) - 1)
                + f" {extra_blank}{extra_text}"
            )
        if len(f"{chart} {extra_text}") <= width and swap_text:
            return f"{chart} {extra_text}".ljust(width)
    return f"{chart} {text}".ljust(width)


def intensity_color(value: float | None, thresholds: tuple[int, int]) -> str:
    if value is None:
        return INTENSITY_COLORS[1]
    if value >= thresholds[1]:
        return INTENSITY_COLORS[2]
    if value >= thresholds[0]:
        return INTENSITY_COLORS[1]
    return INTENSITY_COLORS[0]


def plain(line: Line) -> str:
    return "".join(text for _, text in line)


ANSI = {"bold": 1, "dim": 2, "dark": 2, "underline": 4, "reverse": 7, "red": 31,
        "green": 32, "yellow": 33, "blue": 34, "magenta": 35, "cyan": 36, "white": 37}  # fmt: skip


def ansi(line: Line) -> str:
    """termcolor's codes: attributes, then the colour, then the text and a reset."""
    out = []
    for style, text in line:
        if not style or not text:
            out.append(text)
            continue
        words = style.split()
        colors = [w for w in words if w in ANSI and ANSI[w] >= 30]
        attrs = [w for w in words if w in ANSI and ANSI[w] < 30]
        codes = "".join(f"\x1b[{ANSI[a]}m" for a in reversed(attrs))
        codes += "".join(f"\x1b[{ANSI[c]}m" for c in colors)
        out.append(f"{codes}{text}\x1b[0m")
    return "".join(out)


# --------------------------------------------------------------- devices
class DeviceRow:
    """One GPU as nvitop's device panel describes it."""

    def __init__(self, snapshot: Snapshot, gpu: GpuRecord) -> None:
        model = snapshot["models"][gpu["model"]]
        name = str(model["name"]).removeprefix("NVIDIA ")
        self.index = gpu["index"]
        self.name = cut_string(name, 19, "..", "right")
        self.bus_id = gpu["bus_id"]
        used = gpu["memory_used_mib"] * MIB
        total = gpu["memory_total_mib"] * MIB
        self.memory_used_human = bytes2human(used)
        self.memory_percent = round(100.0 * used / total, 1) if total else None
        self.memory_usage = f"{self.memory_used_human} / {bytes2human(total)}"
        self.gpu_utilization = gpu["utilization_gpu_pct"]
        self.memory_utilization = gpu["utilization_memory_pct"]
        power, limit = gpu["power_draw_mw"], gpu["power_limit_mw"]
        self.power_status = f"{power // 1000}W / {limit // 1000}W"
        self.power_utilization = round(100.0 * power / limit, 1) if limit else None
        self.temperature = f"{gpu['temperature_gpu_c']}C"
        self.performance_state = gpu["pstate"]
        ecc = gpu["ecc"]
        self.ecc_errors = ecc["volatile_dram_uncorrected"] + ecc["volatile_sram_uncorrected"]
        self.clock_sm = gpu["clock_sm_mhz"]
        self.clock_memory = gpu["clock_memory_mhz"]
        self.memory_color = intensity_color(self.memory_percent, MEMORY_THRESHOLDS)
        self.gpu_color = intensity_color(self.gpu_utilization, GPU_THRESHOLDS)
        self.bandwidth_color = intensity_color(self.memory_utilization, MEMORY_THRESHOLDS)
        self.power_color = intensity_color(self.power_utilization, GPU_THRESHOLDS)
        # the heavier of memory and compute load
        order = INTENSITY_COLORS.index
        self.color = max(self.memory_color, self.gpu_color, key=order)
        self.persistence = "On" if gpu["persistence_mode"] else "Off"
        self.display, self.mig, self.compute = "Off", "Disabled", "Default"
        self.utilization_text = f"{self.gpu_utilization}%"
        self.ecc_text = str(self.ecc_errors)
        if gpu.get("lost"):
            # fallen off the bus: every NVML query fails, as nvitop shows it
            self.name = "ERROR: GPU is lost"
            self.persistence = self.display = self.mig = self.compute = "N/A"
            self.temperature = self.performance_state = self.power_status = "N/A"
            self.memory_usage = self.utilization_text = self.ecc_text = "N/A"
            self.memory_used_human = "N/A"
            self.memory_percent = self.power_utilization = None
            self.color = "red"

    def full_lines(self) -> list[str]:
        return [
            f"│ {self.index:>3}  {self.name:<19} {self.persistence:>4} │ {self.bus_id:<16} "
            f"{self.display:>3} │ {self.mig:>8}  {self.ecc_text:>10} │",
            f"│ {'N/A':>3}  {self.temperature:>4}  {self.performance_state:^4} "
            f"{self.power_status:>13} │ {self.memory_usage:>20} │ "
            f"{self.utilization_text:>7}  {self.compute:>11} │",
        ]

    def compact_line(self) -> str:
        return (
            f"│ {self.index:>3} {'N/A':>3} {self.temperature:>4} {self.performance_state:>3}"
            f"{self.power_status:>13} │ {self.memory_usage:>20} │ "
            f"{self.utilization_text:>7}  {self.compute:>11} │"
        )

    def bars(self, remaining: int) -> list[list[tuple[str, str]]]:
        """The bar charts right of the table (terminals of 100 columns and more)."""
        if remaining >= 44:
            left, right = (remaining - 6 + 1) // 2 - 1, (remaining - 6) // 2 + 1
            matrix = [
                [("MEM", self.memory_percent, self.memory_color, left, self.memory_used_human),
                 ("MBW", float(self.memory_utilization), self.bandwidth_color, right,
                  f"@ {self.clock_memory}MHz")],
                [("UTL", float(self.gpu_utilization), self.gpu_color, left,
                  f"@ {self.clock_sm}MHz"),
                 ("PWR", self.power_utilization, self.power_color, right,
                  self.power_status.partition(" / ")[0])],
            ]  # fmt: skip
        else:
            matrix = [
                [("MEM", self.memory_percent, self.memory_color, remaining - 3,
                  self.memory_used_human)],
                [("UTL", self.gpu_utilization, self.gpu_color, remaining - 3,
                  f"@ {self.clock_sm}MHz")],
            ]  # fmt: skip
        rows = []
        for row in matrix:
            cells = []
            for prefix, value, color, width, extra in row:
                chart = bar_chart(prefix, value, width, extra_text=extra,
                                  swap_text=not extra.endswith("MHz"), extra_blank=" ")  # fmt: skip
                cells.append((color, chart))
            rows.append(cells)
        return rows


def device_lines(
    snapshot: Snapshot, node: NodeRecord, width: int, compact: bool = False,
    now: float | None = None, selected_gpu: int | None = None,
) -> list[Line]:  # fmt: skip
    """The device panel: date, banner, one block per GPU, bars when wide."""
    rows = [DeviceRow(snapshot, gpu) for gpu in node["gpus"]]
    driver, cuda = snapshot["driver_version"], snapshot["cuda_version"]
    infos = [f"NVITOP {VERSION}", f"Driver Version: {driver}", f"CUDA Driver Version: {cuda}"]
    if sum(len(v) for v in infos) % 2 == 0:
        infos[0] += " "
    seps = " " * max(2, (75 - sum(len(v) for v in infos)) // 2)
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now or snapshot["time"]))
    lines: list[Line] = [
        [("", stamp)],
        [("", TABLE_TOP)],
        [("", f"│ {seps.join(infos).ljust(75)} │")],
    ]
    if not rows:
        lines += [[("", s)] for s in (
            "╞═════════════════════════════════════════════════════════════════════════════╡",
            "│  No visible devices found                                                   │",
            "╘═════════════════════════════════════════════════════════════════════════════╛",
        )]  # fmt: skip
        return lines
    lines.append([("", TABLE_SPLIT)])
    lines += [[("", HEAD_COMPACT)]] if compact else [[("", h)] for h in HEAD_FULL]
    lines.append([("", TABLE_HEAD)])
    wide = width >= 100
    remaining = width - 79
    for k, row in enumerate(rows):
        if k:
            lines.append([("", TABLE_ROW_SEP)])
        attr = ""
        if selected_gpu is not None:
            attr = " bold" if row.index == selected_gpu else " dim"
        for text in [row.compact_line()] if compact else row.full_lines():
            parts = text.split("│")
            line: Line = []
            for p, part in enumerate(parts):
                if p:
                    line.append(("", "│"))
                line.append(((row.color + attr) if part else "", part))
            lines.append(line)
    lines.append([("", TABLE_BOTTOM)])
    if wide:
        _add_bars(lines, rows, remaining, compact)
    return lines


def _add_bars(lines: list[Line], rows: list[DeviceRow], remaining: int, compact: bool) -> None:
    first = 5 if compact else 6  # the ╞═══ line
    per_row = 1 if compact else 2
    right = (remaining - 6) // 2 + 1
    two_columns = remaining >= 44
    top = lines[first]
    top[-1] = ("", top[-1][1][:-1] + "╪" + "═" * (remaining - 1) + "╕")
    y = first + 1
    for k, row in enumerate(rows):
        if k:
            sep = lines[y]
            sep[-1] = ("", sep[-1][1][:-1] + "┼" + "─" * (remaining - 1) + "┤")
            y += 1
        bars = row.bars(remaining)
        if compact:
            bars = [[bars[0][0], bars[1][0]]] if two_columns else [bars[0]]
        if two_columns:
            mark = "┼" if k else "╤"
            prev = lines[y - 1]
            text = prev[-1][1]
            prev[-1] = ("", text[: -right - 4] + mark + text[-right - 3 :])
        for offset in range(per_row):
            cells = bars[offset] if offset < len(bars) else []
            for color, chart in cells:
                lines[y + offset] += [("", " "), (color, chart), ("", " │")]
        y += per_row
    bottom = lines[y]
    text = bottom[-1][1][:-1] + "╧" + "═" * (remaining - 1) + "╛"
    if two_columns:
        text = text[: -right - 4] + "╧" + text[-right - 3 :]
    bottom[-1] = ("", text)


# ------------------------------------------------------------------ host
class HostFigures:
    """What the host panel shows: the fake node's server, or this machine."""

    def __init__(
        self, cpu_percent: float, load_average: tuple[float, float, float],
        memory_percent: float, memory_used: int, swap_percent: float, uptime_s: float,
    ) -> None:  # fmt: skip
        self.cpu_percent = cpu_percent
        self.load_average = load_average
        self.memory_percent = memory_percent
        self.memory_used = memory_used
        self.swap_percent = swap_percent
        self.uptime_s = uptime_s

    @classmethod
    def of_node(cls, node: NodeRecord, now: float) -> HostFigures:
        host = node["host"]
        total = max(1, host["memory_total_mib"])
        swap_total = max(1, host["swap_total_mib"])
        load = host["load_avg"]
        return cls(
            cpu_percent=round(host["cpu_util_pct"], 1),
            load_average=(load[0], load[1], load[2]),
            memory_percent=round(100.0 * host["memory_used_mib"] / total, 1),
            memory_used=host["memory_used_mib"] * MIB,
            swap_percent=round(100.0 * host["swap_used_mib"] / swap_total, 1),
            uptime_s=now - host["boot_time"],
        )

    @classmethod
    def of_this_machine(cls) -> HostFigures:
        import os

        import psutil

        memory, swap = psutil.virtual_memory(), psutil.swap_memory()
        load = os.getloadavg()
        return cls(
            cpu_percent=psutil.cpu_percent(),
            load_average=(load[0], load[1], load[2]),
            memory_percent=memory.percent,
            memory_used=memory.used,
            swap_percent=swap.percent,
            uptime_s=time.time() - psutil.boot_time(),
        )


def load_average_text(figures: HostFigures) -> str:
    values = (f"{v:5.2f}"[:5] if v < 10000.0 else "9999+" for v in figures.load_average)
    return "Load Average: {} {} {}".format(*values)


def host_lines(figures: HostFigures, width: int) -> list[Line]:
    """The compact host panel: CPU and MEM bars, load average, swap."""
    load = load_average_text(figures)
    width_right = len(load) + 4
    width_left = width - 2 - width_right
    uptime = timedelta2human(figures.uptime_s, rounded=True)
    cpu = "[ {} ]".format(bar_chart("CPU", figures.cpu_percent, width_left - 4,
                                    extra_text=f"UPTIME: {uptime}", extra_blank=" "))  # fmt: skip
    used = bytes2human(figures.memory_used, min_unit=GIB)
    memory = "[ {} ]".format(bar_chart("MEM", figures.memory_percent, width_left - 4,
                                       extra_text=f"USED: {used}", extra_blank=" "))  # fmt: skip
    swap = "[ {} ]".format(bar_chart("SWP", figures.swap_percent, width_right - 4))
    return [
        [("bold cyan", cpu), ("", "  "), ("bold", f"( {load} )")],
        [("bold magenta", memory), ("", "  "), ("bold blue", swap)],
    ]


# ------------------------------------------------------------- processes
class ProcessRow:
    """One GPU process as nvitop's process panel describes it."""

    def __init__(self, record: ProcessRecord, host: HostProcess, device_color: str) -> None:
        self.gpu = record["gpu_index"]
        self.pid = record["pid"]
        self.type = record["type"]
        self.user = host.user
        self.gpu_memory = record["used_memory_mib"]
        self.gpu_memory_human = bytes2human(record["used_memory_mib"] * MIB)
        self.sm = record["sm_util_pct"]
        self.gmbw = record["mem_util_pct"]
        self.cpu_percent = round(host.cpu_percent, 1)
        self.memory_percent = round(host.memory_percent, 1)
        self.running_s = host.running_s
        self.time_human = timedelta2human(host.running_s)
        self.command = _command(host.cmdline)
        self.local = host.local
        self.color = device_color


def _command(cmdline: tuple[str, ...]) -> str:
    if len(cmdline) == 1:
        return cmdline[0]
    return " ".join(shlex.quote(arg) if arg else '""' for arg in cmdline)


ORDERS = {  # name: (column, key, reverse)
    "natural": ("ID", lambda p: (p.gpu, p.user, p.pid), False),
    "pid": ("PID", lambda p: (p.pid, p.gpu), False),
    "username": ("USER", lambda p: (p.user, p.pid), False),
    "gpu_memory": ("GPU-MEM", lambda p: (p.gpu_memory, p.sm, p.pid), True),
    "sm_utilization": ("SM", lambda p: (p.sm, p.gpu_memory, p.pid), True),
    "gpu_memory_utilization": ("GMBW", lambda p: (p.gmbw, p.gpu_memory, p.pid), True),
    "cpu_percent": ("%CPU", lambda p: (p.cpu_percent, p.memory_percent, p.pid), True),
    "memory_percent": ("%MEM", lambda p: (p.memory_percent, p.cpu_percent, p.pid), True),
    "time": ("TIME", lambda p: (p.running_s, p.pid), True),
}


def process_rows(
    node: NodeRecord, snapshot: Snapshot, hosts: dict[int, HostProcess], order: str = "natural",
    reverse: bool = False,
) -> list[ProcessRow]:  # fmt: skip
    colors = {gpu["index"]: DeviceRow(snapshot, gpu).color for gpu in node["gpus"]}
    rows = [
        ProcessRow(r, hosts[r["pid"]], colors.get(r["gpu_index"], "")) for r in node["processes"]
    ]
    _, key, descending = ORDERS[order]
    rows.sort(key=key, reverse=descending != reverse)
    return rows


def host_info(rows: list[ProcessRow]) -> list[str]:
    length = max([4, *(len(r.time_human) for r in rows)])
    return [
        f"{r.cpu_percent:.1f}".rjust(5) + " " + f"{r.memory_percent:.1f}".rjust(5) + "  "
        + r.time_human.rjust(length) + "  " + r.command
        for r in rows
    ]  # fmt: skip


def process_print_width(rows: list[ProcessRow], width: int) -> int:
    return min(width, max([79, *(45 + len(info) for info in host_info(rows))]))


def process_lines(
    rows: list[ProcessRow], width: int, user_context: tuple[str, str], superuser: bool,
    compact: bool = False, selected: int | None = None, order: str = "natural",
    host_offset: int = 0,
) -> list[Line]:  # fmt: skip
    """The process panel. ``user_context``: (user, host) shown top right."""
    user, host = user_context
    context = f"{user}@{host}"
    title = "Processes:".ljust(width - 4 - len(context))
    headers = "  ".join(["%CPU", "%MEM", "TIME", "COMMAND"]).ljust(width - 46)
    column = ORDERS[order][0]
    head_text = f"│ GPU     PID      USER  GPU-MEM %SM %GMBW  {headers} │"
    head: Line = [("", head_text)]
    if order != "natural" and column in head_text:
        start = head_text.index(column if column != "SM" else "%SM")
        size = len(column if column != "SM" else "%SM")
        head = [("", head_text[:start]), ("bold underline", head_text[start : start + size]),
                ("", head_text[start + size :])]  # fmt: skip
    lines: list[Line] = [
        [("", "╒" + "═" * (width - 2) + "╕")],
        [("", f"│ {title}"), ("bold " + ("yellow" if superuser else "magenta"), user),
         ("bold", "@"), ("bold green", host), ("", " │")],
        head,
        [("", "╞" + "═" * (width - 2) + "╡")],
    ]  # fmt: skip
    if not rows:
        message = " No running processes found"
        lines += [[("", f"│ {message.ljust(width - 4)} │")], [("", "╘" + "═" * (width - 2) + "╛")]]
        return lines
    infos = host_info(rows)
    previous = None
    for k, (row, info) in enumerate(zip(rows, infos, strict=True)):
        if order == "natural" and not compact and previous is not None and row.gpu != previous:
            lines.append([("", "├" + "─" * (width - 2) + "┤")])
        previous = row.gpu
        shown = cut_string(info[host_offset:] if host_offset else info, width - 45, "..")
        body = "{:>7} {} {} {:>8} {:>3} {:>5} {}".format(
            cut_string(str(row.pid), 7, "."),
            row.type,
            cut_string(row.user, 7, "+").rjust(7),
            row.gpu_memory_human,
            row.sm,
            row.gmbw,
            shown.ljust(width - 45)[: width - 45],
        )
        style = "reverse" if selected == k else ""
        if not row.local:
            style = (style + " dim").strip()
        lines.append([("", "│"), (row.color + (" reverse" if selected == k else ""),
                      f"{row.gpu:>4}"), (style, f" {body} "), ("", "│")])  # fmt: skip
    lines.append([("", "╘" + "═" * (width - 2) + "╛")])
    return lines
