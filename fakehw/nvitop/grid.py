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

from fakehw import TYPE_CHECKING
from fakehw.nvitop import view

if TYPE_CHECKING:
    from fakehw.contract.snapshot import ClusterSummary
    from fakehw.nvitop.source import Source

LEVELS = " ▁▂▃▄▅▆▇█"
CELL = 7  # "100%67C" over " 57%690": utilization, temperature / memory, power


class Grid:
    """The cluster as the grid draws it, read from one ``summary``: per GPU a tuple
    (utilization %, temperature C, memory used MiB, power mW, power limit mW, lost)."""

    def __init__(self, summary: ClusterSummary) -> None:
        columns = summary["columns"]
        self.summary = summary
        self.hostnames = summary["hostnames"]
        self.gpus_per_node = summary["gpus_per_node"]
        self.memory_total_mib = summary["memory_total_mib"]
        self.gpus = list(
            zip(
                columns["utilization_gpu_pct"],
                columns["temperature_gpu_c"],
                columns["memory_used_mib"],
                columns["power_draw_mw"],
                columns["power_limit_mw"],
                columns["lost"],
                strict=True,
            )
        )

    @property
    def nodes(self) -> int:
        return len(self.hostnames)

    def node_gpus(self, node: int) -> list[tuple[int, int, int, int, int, int]]:
        first = node * self.gpus_per_node
        return self.gpus[first : first + self.gpus_per_node]


def temperature_color(celsius: int) -> str:
    if celsius >= 80:
        return "bold red"
    if celsius >= 70:
        return "red"
    if celsius >= 55:
        return "yellow"
    return "cyan" if celsius < 45 else "green"


def summary_lines(grid: Grid) -> list[view.Line]:
    columns = grid.summary["columns"]
    count = len(grid.gpus)
    lost = sum(columns["lost"])
    busy = sum(1 for util, *_, gone in grid.gpus if util >= 50 and not gone)
    temps = columns["temperature_gpu_c"] or [0]
    power_kw = sum(columns["power_draw_mw"]) / 1e6
    used = sum(columns["memory_used_mib"])
    total = grid.memory_total_mib * count or 1
    nodes = grid.nodes
    head = f"{count} x {grid.summary['model_name']} on {nodes} node{'s' if nodes != 1 else ''}"
    stats = (
        f"busy {busy}/{count} · temp mean {sum(temps) / len(temps):.0f}C max {max(temps)}C · "
        f"power {power_kw:.1f} kW · memory {100 * used / total:.0f}% "
        f"({view.bytes2human(used * view.MIB, min_unit=view.GIB)})"
        + (f" · LOST {lost}" if lost else "")
    )
    return [[("bold", head)], [("", stats)]]


def _detail_cells(
    gpu: tuple[int, int, int, int, int, int], memory_total_mib: int
) -> tuple[view.Fragment, view.Fragment, view.Fragment]:
    """The top cell (util, temp) and the two halves of the bottom one (memory, power)."""
    util, temp, used, power_mw, limit_mw, lost = gpu
    if lost:
        return ("bold red", "  LOST "), ("red", "XID "), ("red", " 79")
    memory = 100 * used / max(1, memory_total_mib)
    power = power_mw // 1000
    limit = max(1, limit_mw // 1000)
    top = (view.intensity_color(util, view.GPU_THRESHOLDS), f"{util:>3}%{temp:>2}C")
    memory_cell = (view.intensity_color(memory, view.MEMORY_THRESHOLDS), f"{memory:>3.0f}%")
    power_cell = (view.intensity_color(100 * power / limit, view.GPU_THRESHOLDS), f"{power:>3}")
    return top, memory_cell, power_cell


def _detail_layout(grid: Grid, width: int) -> tuple[int, int]:
    """(label width, GPUs per line) of the detailed layout."""
    label_width = max(len(name) for name in grid.hostnames) + 1
    return label_width, max(1, (width - label_width) // (CELL + 1))


def detailed_line_count(grid: Grid, width: int) -> int:
    per_line = _detail_layout(grid, width)[1]
    return grid.nodes * 2 * -(-grid.gpus_per_node // per_line)


def detailed_lines(grid: Grid, width: int, rows: slice | None = None) -> list[view.Line]:
    """Two lines per node; a node wider than the terminal wraps its GPUs. ``rows``:
    only these lines of the whole (what a scrolled screen shows)."""
    label_width, per_line = _detail_layout(grid, width)
    lines_per_node = 2 * -(-grid.gpus_per_node // per_line)
    wanted = rows or slice(0, grid.nodes * lines_per_node)
    first_node = wanted.start // lines_per_node
    last_node = min(grid.nodes, -(-wanted.stop // lines_per_node))
    lines: list[view.Line] = []
    for node in range(first_node, last_node):
        gpus = grid.node_gpus(node)
        for start in range(0, len(gpus), per_line):
            label = grid.hostnames[node] if start == 0 else ""
            first: view.Line = [("bold", label.ljust(label_width))]
            second: view.Line = [("", " " * label_width)]
            for gpu in gpus[start : start + per_line]:
                top, memory_cell, power_cell = _detail_cells(gpu, grid.memory_total_mib)
                first += [top, ("", " ")]
                second += [memory_cell, power_cell, ("", " ")]
            lines += [first, second]
    skip = wanted.start - first_node * lines_per_node
    return lines[skip : skip + (wanted.stop - wanted.start)]


def _dense_layout(grid: Grid, width: int) -> tuple[int, int]:
    """(label width, nodes per line) of the dense layout."""
    label = len(str(grid.nodes))
    return label, max(1, (width - label - 1) // (grid.gpus_per_node + 1))


def dense_line_count(grid: Grid, width: int) -> int:
    per_line = _dense_layout(grid, width)[1]
    return -(-grid.nodes // per_line)


def dense_lines(grid: Grid, width: int, rows: slice | None = None) -> list[view.Line]:
    """One character per GPU, a space between nodes, the first node's number
    leading each line: 128 nodes of 8 GPUs take 16 lines of 80 columns."""
    label, per_line = _dense_layout(grid, width)
    wanted = rows or slice(0, dense_line_count(grid, width))
    lines: list[view.Line] = []
    top = len(LEVELS) - 1
    for row in range(wanted.start, min(wanted.stop, dense_line_count(grid, width))):
        start = row * per_line
        line: view.Line = [("dim", f"{start + 1:0{label}d} ")]
        for node in range(start, min(start + per_line, grid.nodes)):
            for util, temp, *_, lost in grid.node_gpus(node):
                if lost:
                    line.append(("bold red", "X"))  # fallen off the bus
                    continue
                level = LEVELS[round(util / 100 * top)]
                line.append((temperature_color(temp), level if level != " " else "·"))
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


def compose(grid: Grid, width: int, height: int | None, dense: bool | None,
            offset: int = 0) -> list[view.Line]:  # fmt: skip
    """The grid; ``dense=None`` picks the detailed layout when it fits ``height``.
    Only the lines on screen are built, so 65,536 GPUs cost what a screenful does."""
    if dense is None:
        dense = height is not None and fits_dense(grid, width, height)
    count = dense_line_count(grid, width) if dense else detailed_line_count(grid, width)
    build = dense_lines if dense else detailed_lines
    head = [*summary_lines(grid), legend(dense), [("", "")]]
    if height is None:
        return head + build(grid, width)
    room = max(1, height - len(head))
    offset = max(0, min(offset, count - room))
    shown = build(grid, width, slice(offset, offset + room))
    if count > room:
        more = f" rows {offset + 1}-{offset + len(shown)} of {count} (arrows, PgUp/PgDn) "
        head[3] = [("reverse", more)]
    return head + shown


def fits_dense(grid: Grid, width: int, height: int) -> bool:
    """Whether the dense layout is the one to show: the detailed one does not fit."""
    return detailed_line_count(grid, width) + 4 > height


def print_once(source: Source, args: argparse.Namespace) -> None:
    import shutil
    import sys

    width = shutil.get_terminal_size(fallback=(80, 24)).columns
    grid = Grid(source.summary())
    color = args.force_color or sys.stdout.isatty()
    render = view.ansi if color else view.plain
    out = sys.stdout
    for line in compose(grid, width, None, dense=False):
        out.write(render(line) + "\n")
    out.flush()


def run_live(source: Source, args: argparse.Namespace) -> None:
    from fakehw.nvitop.app import Live

    state = GridState(Grid(source.summary()))

    def refresh() -> None:
        state.grid = Grid(source.summary())

    def render(width: int, height: int) -> list[view.Line]:
        state.shown_dense = (
            state.dense if state.dense is not None else fits_dense(state.grid, width, height)
        )
        return compose(state.grid, width, height, state.shown_dense, state.offset)

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
    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.offset = 0
        self.dense: bool | None = None  # None: whichever fits
        self.shown_dense = False

    def scroll(self, step: int) -> None:
        self.offset = max(0, self.offset + step)

    def toggle(self) -> None:
        self.dense = not self.shown_dense
        self.offset = 0
