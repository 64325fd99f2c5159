"""``fake-nvitop --cluster``: every GPU of the fake cluster at a glance.

Two layouts, chosen by what fits:

* detailed: per node two lines, one cell per GPU: utilization and
  temperature on the first, memory use and power on the second, each
  coloured by load (nvitop's light/moderate/heavy colours, temperature by
  heat);
* dense: one character per GPU, its height the utilization and its colour
  the temperature, eight nodes to a line; 1024 GPUs fit an 80x24 terminal.

A summary line heads both: GPUs busy, mean and hottest temperature, total
power, memory in use. The live view scrolls (arrows, PageUp/PageDown); ``d``
switches layout.
"""

from __future__ import annotations

import argparse

from fakehw.nvitop import view

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from fakehw.nvitop.cli import Source
    from fakehw.snapshot import GpuRecord, Snapshot

LEVELS = " ▁▂▃▄▅▆▇█"
CELL = 7  # "100%67C" over " 57%690": utilization, temperature / memory, power


def temperature_color(celsius: int) -> str:
    if celsius >= 80:
        return "bold red"
    if celsius >= 70:
        return "red"
    if celsius >= 55:
        return "yellow"
    return "cyan" if celsius < 45 else "green"


def summary_lines(snapshot: Snapshot) -> list[view.Line]:
    gpus = [g for node in snapshot["nodes"] for g in node["gpus"]]
    busy = sum(1 for g in gpus if g["utilization_gpu_pct"] >= 50 and not g.get("lost"))
    lost = sum(1 for g in gpus if g.get("lost"))
    temps = [g["temperature_gpu_c"] for g in gpus] or [0]
    power_kw = sum(g["power_draw_mw"] for g in gpus) / 1e6
    used = sum(g["memory_used_mib"] for g in gpus)
    total = sum(g["memory_total_mib"] for g in gpus) or 1
    model = next(iter(snapshot["models"].values()))["name"] if snapshot["models"] else "?"
    nodes = len(snapshot["nodes"])
    head = f"{len(gpus)} x {model} on {nodes} node{'s' if nodes != 1 else ''}"
    stats = (
        f"busy {busy}/{len(gpus)} · temp mean {sum(temps) / len(temps):.0f}C max {max(temps)}C · "
        f"power {power_kw:.1f} kW · memory {100 * used / total:.0f}% "
        f"({view.bytes2human(used * view.MIB, min_unit=view.GIB)})"
        + (f" · LOST {lost}" if lost else "")
    )
    return [[("bold", head)], [("", stats)]]


def _detail_cells(gpu: GpuRecord) -> tuple[view.Fragment, view.Fragment]:
    if gpu.get("lost"):
        return ("bold red", "  LOST "), ("red|red", "XID  79")
    util = gpu["utilization_gpu_pct"]
    temp = gpu["temperature_gpu_c"]
    memory = 100 * gpu["memory_used_mib"] / max(1, gpu["memory_total_mib"])
    power = gpu["power_draw_mw"] // 1000
    limit = max(1, gpu["power_limit_mw"] // 1000)
    top = (view.intensity_color(util, view.GPU_THRESHOLDS), f"{util:>3}%{temp:>2}C")
    bottom = (view.intensity_color(memory, view.MEMORY_THRESHOLDS), f"{memory:>3.0f}%")
    power_cell = (view.intensity_color(100 * power / limit, view.GPU_THRESHOLDS), f"{power:>3}")
    return top, (bottom[0] + "|" + power_cell[0], bottom[1] + power_cell[1])


def detailed_lines(snapshot: Snapshot, width: int) -> list[view.Line]:
    """Two lines per node; a node wider than the terminal wraps its GPUs."""
    label_width = max(len(n["hostname"]) for n in snapshot["nodes"]) + 1
    per_line = max(1, (width - label_width) // (CELL + 1))
    lines: list[view.Line] = []
    for node in snapshot["nodes"]:
        gpus = node["gpus"]
        for start in range(0, len(gpus), per_line):
            chunk = gpus[start : start + per_line]
            label = node["hostname"] if start == 0 else ""
            first: view.Line = [("bold", label.ljust(label_width))]
            second: view.Line = [("", " " * label_width)]
            for gpu in chunk:
                top, bottom = _detail_cells(gpu)
                first += [top, ("", " ")]
                memory_style, power_style = bottom[0].split("|")
                second += [(memory_style, bottom[1][:4]), (power_style, bottom[1][4:]), ("", " ")]
            lines += [first, second]
    return lines


def dense_lines(snapshot: Snapshot, width: int) -> list[view.Line]:
    """One character per GPU, a space between nodes, the first node's number
    leading each line: 128 nodes of 8 GPUs take 16 lines of 80 columns."""
    nodes = snapshot["nodes"]
    per_node = max((len(n["gpus"]) for n in nodes), default=1)
    label = len(str(len(nodes)))
    per_line = max(1, (width - label - 1) // (per_node + 1))
    lines: list[view.Line] = []
    for start in range(0, len(nodes), per_line):
        line: view.Line = [("dim", f"{start + 1:0{label}d} ")]
        for node in nodes[start : start + per_line]:
            for gpu in node["gpus"]:
                if gpu.get("lost"):
                    line.append(("bold red", "X"))  # fallen off the bus
                    continue
                level = LEVELS[round(gpu["utilization_gpu_pct"] / 100 * (len(LEVELS) - 1))]
                shown = level if level != " " else "·"
                line.append((temperature_color(gpu["temperature_gpu_c"]), shown))
            line.append(("", " "))
        lines.append(line)
    return lines


def legend(dense: bool) -> view.Line:
    if dense:
        return [("dim", "a block per node · ▁-█ util · temp: "),
                ("cyan", "<45C "), ("green", "<55C "),
                ("yellow", "<70C "), ("red", "<80C "), ("bold red", ">=80C")]  # fmt: skip
    return [("dim", "per GPU: util% temp C / mem% power W · colour: "), ("green", "light "),
            ("yellow", "moderate "), ("red", "heavy")]  # fmt: skip


def compose(snapshot: Snapshot, width: int, height: int | None, dense: bool | None,
            offset: int = 0) -> list[view.Line]:  # fmt: skip
    """The grid; ``dense=None`` picks the detailed layout when it fits ``height``."""
    if dense is None:
        dense = height is not None and fits_dense(snapshot, width, height)
    body = dense_lines(snapshot, width) if dense else detailed_lines(snapshot, width)
    head = [*summary_lines(snapshot), legend(dense), [("", "")]]
    if height is None:
        return head + body
    room = max(1, height - len(head))
    offset = max(0, min(offset, len(body) - room))
    shown = body[offset : offset + room]
    if len(body) > room:
        more = f" rows {offset + 1}-{offset + len(shown)} of {len(body)} (arrows, PgUp/PgDn) "
        head[3] = [("reverse", more)]
    return head + shown


def fits_dense(snapshot: Snapshot, width: int, height: int) -> bool:
    """Whether the dense layout is the one to show: the detailed one does not fit."""
    return len(detailed_lines(snapshot, width)) + 4 > height


def print_once(source: Source, args: argparse.Namespace) -> None:
    import shutil
    import sys

    width = shutil.get_terminal_size(fallback=(80, 24)).columns
    snapshot = source.snapshot(whole_cluster=True)
    color = args.force_color or sys.stdout.isatty()
    render = view.ansi if color else view.plain
    print("\n".join(render(line) for line in compose(snapshot, width, None, dense=False)))


def run_live(source: Source, args: argparse.Namespace) -> None:
    from fakehw.nvitop.app import Live

    state = GridState(source.snapshot(whole_cluster=True))

    def refresh() -> None:
        state.snapshot = source.snapshot(whole_cluster=True)

    def render(width: int, height: int) -> list[view.Line]:
        state.shown_dense = (
            state.dense if state.dense is not None else fits_dense(state.snapshot, width, height)
        )
        return compose(state.snapshot, width, height, state.shown_dense, state.offset)

    live = Live(render, refresh, args.interval or 1.0)
    live.keys.add("q")(lambda event: live.quit())
    live.keys.add("d")(lambda event: state.toggle())
    live.keys.add("down")(lambda event: state.scroll(1))
    live.keys.add("up")(lambda event: state.scroll(-1))
    live.keys.add("pagedown")(lambda event: state.scroll(10))
    live.keys.add("pageup")(lambda event: state.scroll(-10))
    live.keys.add("home")(lambda event: state.scroll(-(10**9)))
    live.run()


class GridState:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.offset = 0
        self.dense: bool | None = None  # None: whichever fits
        self.shown_dense = False

    def scroll(self, step: int) -> None:
        self.offset = max(0, self.offset + step)

    def toggle(self) -> None:
        self.dense = not self.shown_dense
        self.offset = 0
