"""fake-nvitop's live monitor: nvitop's main screen in a prompt_toolkit application.

``compose`` builds the whole screen as styled lines from a ``Frame`` and the
screen state (mode, selection, sort order): the device panel, the host panel
(compact: two bar lines; full: CPU/MEM/SWP history graphs, and average GPU
memory and utilization graphs beyond 100 columns) and the process panel.
``run`` shows it full screen, refreshes it from the daemon, and handles keys
as nvitop does for the basics: q quits, h or ? shows help, arrows select a
process, , and . pick the sort column, / inverts it, a f c change the mode.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections import deque
from collections.abc import Callable

from fakehw import TYPE_CHECKING
from fakehw.nvitop import view
from fakehw.programs.signals import EXIT_INTERRUPTED, Terminated

if TYPE_CHECKING:
    from prompt_toolkit.formatted_text import StyleAndTextTuples

    from fakehw.nvitop.source import Frame, Source

HISTORY = 512  # samples kept per graph (one per refresh)
ORDER_CYCLE = list(view.ORDERS)

HELP_TEXT = """\
fake-nvitop {version} - nvitop's look on the fakehw daemon's GPUs.

GPU Process Type: C: Compute, G: Graphics, X: Mixed.

Device coloring rules by loading intensity:
  - GPU utilization: light < {g1:2d}% <= moderate < {g2:2d}% <= heavy.
  - GPU-MEM percent: light < {m1:2d}% <= moderate < {m2:2d}% <= heavy.

      a f c: change display mode                h ?: show this help screen
       F5 r: force refresh window                 q: quit

     Arrows: scroll process list                Esc: clear process selection
       Home: select the first process           End: select the last process
   Ctrl-A ^: scroll to left most           Ctrl-E $: scroll to right most

      on oN: sort by GPU-INDEX
      op oP: sort by PID                      ob oB: sort by %GMBW
      ou oU: sort by USER                     oc oC: sort by %CPU
      og oG: sort by GPU-MEM                  om oM: sort by %MEM
      os oS: sort by %SM                      ot oT: sort by TIME
        , .: select sort column                   /: invert sort order

Press any key to return."""

SORT_KEYS = {"n": "natural", "p": "pid", "u": "username", "g": "gpu_memory",
             "s": "sm_utilization", "b": "gpu_memory_utilization", "c": "cpu_percent",
             "m": "memory_percent", "t": "time"}  # fmt: skip

# Up-growing braille cells: (left dots, right dots) -> character, 0-4 each.
_UP = " ⢀⢠⢰⢸⡀⣀⣠⣰⣸⡄⣄⣤⣴⣼⡆⣆⣦⣶⣾⡇⣇⣧⣷⣿"
_DOWN = " ⠈⠘⠸⢸⠁⠉⠙⠹⢹⠃⠋⠛⠻⢻⠇⠏⠟⠿⢿⡇⡏⡟⡿⣿"


def braille_graph(values: list[float], width: int, height: int, upsidedown: bool) -> list[str]:
    """``height`` rows of ``width`` braille cells, two samples per cell, newest
    on the right, 0-100 % mapped to ``4 * height`` dots."""
    samples = list(values)[-2 * width :]
    samples = [0.0] * (2 * width - len(samples)) + samples
    levels = [max(0, min(4 * height, round(v / 100.0 * 4 * height))) for v in samples]
    table = _DOWN if upsidedown else _UP
    rows = []
    for row in range(height):
        # the dots this row holds: rows count from the baseline
        base = 4 * (row if upsidedown else height - 1 - row)
        cells = []
        for k in range(width):
            left = max(0, min(4, levels[2 * k] - base))
            right = max(0, min(4, levels[2 * k + 1] - base))
            cells.append(table[left * 5 + right])
        rows.append("".join(cells))
    return rows


class ScreenState:
    """What the user chose: mode, selection, sort order, scroll, help."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # auto, full, compact
        self.selected: int | None = None
        self.order = "natural"
        self.reverse = False
        self.host_offset = 0
        self.help = False
        self.pending_o = False
        self.cpu: deque[float] = deque(maxlen=HISTORY)
        self.memory: deque[float] = deque(maxlen=HISTORY)
        self.swap: deque[float] = deque(maxlen=HISTORY)
        self.gpu_memory: deque[float] = deque(maxlen=HISTORY)
        self.gpu_util: deque[float] = deque(maxlen=HISTORY)

    def record(self, frame: Frame) -> None:
        figures = frame.figures
        self.cpu.append(figures.cpu_percent)
        self.memory.append(figures.memory_percent)
        self.swap.append(figures.swap_percent)
        gpus = frame.node["gpus"]
        if gpus:
            self.gpu_memory.append(
                sum(100.0 * g["memory_used_mib"] / g["memory_total_mib"] for g in gpus) / len(gpus)
            )
            self.gpu_util.append(sum(g["utilization_gpu_pct"] for g in gpus) / len(gpus))


def _full_host_lines(state: ScreenState, frame: Frame, width: int) -> list[view.Line]:
    """nvitop's full host panel: history graphs in a frame joined to the device table."""
    figures = frame.figures
    remaining = width - 79
    data = "│" + " " * 77 + "│" + ((" " * (remaining - 1) + "│") if width >= 100 else "")
    top = "╞═══════════════════════════════╧══════════════════════╧══════════════════════╡"
    sep = "├────────────╴120s├─────────────────────────╴60s├──────────╴30s├──────────────┤"
    bottom = "╘═════════════════════════════════════════════════════════════════════════════╛"
    if width >= 100:
        top = top[:-1] + "╪" + "═" * (remaining - 1) + "╡"
        sep = sep[:-1] + "┼" + "─" * (remaining - 1) + "┤"
        bottom = bottom[:-1] + "╧" + "═" * (remaining - 1) + "╛"
    grid = [list(data) for _ in range(11)]
    colors = [[""] * len(data) for _ in range(11)]

    def put(row: int, col: int, text: str, color: str = "") -> None:
        for k, ch in enumerate(text):
            if 0 <= col + k < len(data) - 1:
                grid[row][col + k] = ch
                colors[row][col + k] = color

    for y, line in enumerate(braille_graph(list(state.cpu), 77, 5, False)):
        put(y, 1, line, "cyan")
    for y, line in enumerate(braille_graph(list(state.memory), 77, 4, True)):
        put(6 + y, 1, line, "magenta")
    for y, line in enumerate(braille_graph(list(state.swap), 77, 1, True)):
        put(10 + y, 1, line, "blue")
    if width >= 100:
        graph_width = remaining - 1
        mem_color = view.intensity_color(state.gpu_memory[-1] if state.gpu_memory else 0,
                                         view.MEMORY_THRESHOLDS)  # fmt: skip
        util_color = view.intensity_color(state.gpu_util[-1] if state.gpu_util else 0,
                                          view.GPU_THRESHOLDS)  # fmt: skip
        for y, line in enumerate(braille_graph(list(state.gpu_memory), graph_width, 5, False)):
            put(y, 79, line, mem_color)
        for y, line in enumerate(braille_graph(list(state.gpu_util), graph_width, 5, True)):
            put(6 + y, 79, line, util_color)
        avg_mem = state.gpu_memory[-1] if state.gpu_memory else 0.0
        avg_util = state.gpu_util[-1] if state.gpu_util else 0.0
        put(0, 79, f" AVG GPU MEM: {avg_mem:.1f}% ")
        put(10, 79, f" AVG GPU UTL: {avg_util:.1f}% ")
    put(0, 1, f" {view.load_average_text(figures)} ")
    put(1, 1, f" CPU: {figures.cpu_percent:.1f}% ")
    used = view.bytes2human(figures.memory_used, min_unit=view.GIB)
    put(9, 1, f" MEM: {used} ({figures.memory_percent:.1f}%) ")
    put(10, 1, f" SWP: ({figures.swap_percent:.1f}%) ")
    lines: list[view.Line] = [[("", top)]]
    for row in range(11):
        if row == 5:
            lines.append([("", sep)])
        runs: view.Line = []
        for ch, color in zip(grid[row], colors[row], strict=True):
            if runs and runs[-1][0] == color:
                runs[-1] = (color, runs[-1][1] + ch)
            else:
                runs.append((color, ch))
        lines.append(runs)
    lines.append([("", bottom)])
    return lines


def compose(frame: Frame, state: ScreenState, width: int, height: int) -> list[view.Line]:
    """The whole screen at ``width`` x ``height``."""
    width = max(79, width)
    if state.help:
        return _help_lines(width)
    rows = frame.rows(state.order, state.reverse)
    if state.selected is not None:
        state.selected = min(state.selected, len(rows) - 1) if rows else None
    selected_gpu = rows[state.selected].gpu if state.selected is not None else None
    devices = len(frame.node["gpus"])
    full_height = 6 + 3 * devices + 12 + 1 + max(6, 5 + len(rows) + devices - 1)
    mode = state.mode
    if mode == "auto":
        mode = "full" if height >= full_height else "compact"
    compact = mode == "compact"
    device = view.device_lines(frame.snapshot, frame.node, width, compact=compact,
                               selected_gpu=selected_gpu)  # fmt: skip
    hint = "(Press h for help or q to quit)".rjust(79)
    stamp = view.plain(device[0])
    top = stamp + hint[len(stamp) :]
    device[0] = [("", top[:55]), ("bold magenta", top[55]), ("", top[56:69]),
                 ("bold magenta", top[69]), ("", top[70:])]  # fmt: skip
    if compact:
        host = view.host_lines(frame.figures, width)
        lines = [*device, *host]
    else:
        lines = [*device[:-1], *_full_host_lines(state, frame, width)]
    superuser = os.geteuid() == 0
    caution: view.Line = [("", "")]
    if superuser:
        caution = [("", " "), ("red", "!"), ("yellow", "CAUTION: SUPERUSER LOGGED-IN.")]
    lines.append(caution)
    lines += view.process_lines(rows, width, frame.user_context, superuser, compact=compact,
                                selected=state.selected, order=state.order,
                                host_offset=state.host_offset)  # fmt: skip
    return lines[:height]


def _help_lines(width: int) -> list[view.Line]:
    g1, g2 = view.GPU_THRESHOLDS
    m1, m2 = view.MEMORY_THRESHOLDS
    text = HELP_TEXT.format(version=view.VERSION, g1=g1, g2=g2, m1=m1, m2=m2)
    body = text.splitlines()
    inner = max(len(line) for line in body)
    left = " " * max(0, (width - inner - 4) // 2)
    lines: list[view.Line] = [[("", left + "╒" + "═" * (inner + 2) + "╕")]]
    lines += [[("", left + "│ "), ("", line.ljust(inner)), ("", " │")] for line in body]
    lines.append([("", left + "╘" + "═" * (inner + 2) + "╛")])
    return lines


STYLE_MAP = {"green": "fg:ansigreen", "yellow": "fg:ansiyellow", "red": "fg:ansired",
             "cyan": "fg:ansicyan", "magenta": "fg:ansimagenta", "blue": "fg:ansiblue",
             "white": "fg:ansiwhite", "bold": "bold", "dim": "fg:ansibrightblack",
             "reverse": "reverse", "underline": "underline"}  # fmt: skip


def to_prompt_toolkit(lines: list[view.Line]) -> StyleAndTextTuples:
    fragments: StyleAndTextTuples = []
    for k, line in enumerate(lines):
        if k:
            fragments.append(("", "\n"))
        for style, text in line:
            fragments.append((" ".join(STYLE_MAP.get(w, "") for w in style.split()), text))
    return fragments


class Live:
    """A full-screen prompt_toolkit application showing ``render(width, height)``,
    refreshed by ``refresh()`` every ``interval`` seconds on a worker thread.

    Ends with 0 on q, raises ``KeyboardInterrupt`` on Ctrl-C and ``Terminated``
    on SIGTERM; in every case prompt_toolkit restores the terminal (alternate
    screen left, cursor shown) before this returns.
    """

    def __init__(
        self,
        render: Callable[[int, int], list[view.Line]],
        refresh: Callable[[], None],
        interval: float,
    ) -> None:
        from prompt_toolkit.application import Application
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.layout import Layout
        from prompt_toolkit.layout.containers import Window
        from prompt_toolkit.layout.controls import FormattedTextControl

        self.render = render
        self.refresh = refresh
        self.interval = interval
        self.keys = KeyBindings()
        self.failure: list[BaseException] = []
        self._stop = threading.Event()

        def text() -> StyleAndTextTuples:
            size = self.app.output.get_size()
            return to_prompt_toolkit(render(size.columns, size.rows))

        control = FormattedTextControl(text, focusable=True, show_cursor=False)
        self.keys.add("c-c")(lambda event: self.app.exit(result=EXIT_INTERRUPTED))
        self.app: Application[int] = Application(
            layout=Layout(Window(control, wrap_lines=False)),
            key_bindings=self.keys,
            full_screen=True,
        )

    def quit(self) -> None:
        self.app.exit(result=0)

    def _worker(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            try:
                self.refresh()
            except Exception as exc:  # the daemon went away: leave, then report
                self.failure.append(exc)
                self.app.exit(result=1)
                return
            self.app.invalidate()

    def run(self) -> None:
        worker = threading.Thread(target=self._worker, name="fake-nvitop-refresh", daemon=True)
        worker.start()

        def on_signal(signum: int, _frame: object) -> None:
            # Leave through prompt_toolkit, which restores the terminal, then say why.
            loop = self.app.loop
            if loop is not None:
                loop.call_soon_threadsafe(lambda: self.app.exit(result=128 + signum))

        previous = {signum: signal.signal(signum, on_signal)
                    for signum in (signal.SIGTERM, signal.SIGHUP)}  # fmt: skip
        try:
            result = self.app.run()
        finally:
            self._stop.set()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.failure:
            raise self.failure[0]
        if result == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        if result > 128:
            raise Terminated(result - 128)


def run(source: Source, args: argparse.Namespace, mode: str) -> None:
    """The live monitor until q (exit 0), Ctrl-C (130), SIGTERM (143) or SIGHUP (129)."""
    state = ScreenState(mode if mode in ("auto", "full", "compact") else "auto")
    holder: dict[str, Frame] = {"frame": source.frame()}
    state.record(holder["frame"])

    def refresh() -> None:
        holder["frame"] = source.frame()
        state.record(holder["frame"])

    live = Live(lambda w, h: compose(holder["frame"], state, w, h), refresh, args.interval or 2.0)
    keys = live.keys

    def move(step: int) -> None:
        count = len(holder["frame"].node["processes"])
        if not count:
            state.selected = None
        elif state.selected is None:
            state.selected = 0 if step > 0 else count - 1
        else:
            state.selected = max(0, min(count - 1, state.selected + step))

    def cycle(step: int) -> None:
        state.order = ORDER_CYCLE[(ORDER_CYCLE.index(state.order) + step) % len(ORDER_CYCLE)]

    def on_key(data: str) -> None:
        if state.help:
            state.help = False
        elif state.pending_o:
            state.pending_o = False
            order = SORT_KEYS.get(data.lower())
            if order:
                state.order, state.reverse = order, data.isupper()
        elif data == "q":
            live.quit()
        elif data in ("h", "?"):
            state.help = True
        elif data == "o":
            state.pending_o = True
        elif data in ("a", "f", "c"):
            state.mode = {"a": "auto", "f": "full", "c": "compact"}[data]
        elif data in (",", "."):
            cycle(-1 if data == "," else 1)
        elif data == "/":
            state.reverse = not state.reverse
        elif data in ("j", "k"):
            move(1 if data == "j" else -1)
        elif data in ("^", "$"):
            state.host_offset = 0 if data == "^" else 40
        elif data == "r":
            refresh()

    keys.add("<any>")(lambda event: on_key(event.key_sequence[0].data))
    keys.add("down")(lambda event: move(1))
    keys.add("up")(lambda event: move(-1))
    keys.add("home")(lambda event: setattr(state, "selected", 0))
    keys.add("end")(lambda event: move(10**6))
    keys.add("escape", eager=True)(lambda event: setattr(state, "selected", None))
    keys.add("left")(lambda event: setattr(state, "host_offset", max(0, state.host_offset - 2)))
    keys.add("right")(lambda event: setattr(state, "host_offset", state.host_offset + 2))
    keys.add("c-a")(lambda event: setattr(state, "host_offset", 0))
    keys.add("c-e")(lambda event: setattr(state, "host_offset", 40))
    keys.add("f5")(lambda event: refresh())
    live.run()
