"""``fake-nvitop``: nvitop 1.7.2 on the fake GPUs of one node, and a cluster grid.

``fake-nvitop`` on a terminal runs the live monitor; ``-1`` (or output to a
pipe) prints one frame as ``nvitop -1`` does; ``--cluster`` shows every GPU
of the fake cluster as a grid. The node is the one ``FAKEHW_NODE`` names
(default 0). The host panel shows the fake node's server (a DGX-class
machine whose CPU and memory follow the GPU processes), or this machine
with ``--real-host``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Sequence

from fakehw.nvitop import view
from fakehw.nvitop.source import Frame, NvmlError, Source
from fakehw.programs.argtypes import ascii_float, int_option
from fakehw.programs.signals import Terminated, raise_on_termination


def _posfloat(text: str) -> float:
    number = ascii_float(text)
    if not math.isfinite(number) or number <= 0:
        raise ValueError
    return number


_posfloat.__name__ = "positive float"


def build_parser() -> argparse.ArgumentParser:
    """nvitop's options (same names, same meaning), plus fakehw's own."""
    parser = argparse.ArgumentParser(
        prog="nvitop", description="An interactive NVIDIA-GPU process viewer.",
        formatter_class=argparse.RawTextHelpFormatter, add_help=False,
        epilog="fakehw: the GPUs are the fakehw daemon's; FAKEHW_NODE picks the node.",
    )  # fmt: skip
    parser.add_argument(
        "--help",
        "-h",
        action="help",
        default=argparse.SUPPRESS,
        help="Show this help message and exit.",
    )
    parser.add_argument(
        "--version",
        "-V",
        action="version",
        version=f"%(prog)s {view.VERSION}",
        help="Show %(prog)s's version number and exit.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", "-1", dest="once", action="store_true", help="Report query data only once."
    )
    mode.add_argument(
        "--monitor",
        "-m",
        dest="monitor",
        type=str,
        default=argparse.SUPPRESS,
        nargs="?",
        choices=["auto", "full", "compact"],
        help="Run as a resource monitor. Continuously report query data and "
        "handle user inputs.\n(default fallback mode: auto)",
    )
    mode.add_argument(
        "--compact",
        dest="monitor",
        action="store_const",
        const="compact",
        default=argparse.SUPPRESS,
        help="The monitor in compact mode (the same as `-m compact`).",
    )
    parser.add_argument(
        "--interval",
        type=_posfloat,
        default=None,
        metavar="SEC",
        help="Process status update interval in seconds. (default: 2)",
    )
    parser.add_argument(
        "--no-unicode",
        "--ascii",
        "-U",
        dest="no_unicode",
        action="store_true",
        help="Use ASCII characters only.",
    )
    parser.add_argument(
        "--readonly", action="store_true", help="Disable all system and process changing features."
    )
    coloring = parser.add_argument_group("coloring")
    coloring.add_argument(
        "--colorful",
        action="store_true",
        help="Use gradient colors to get spectrum-like bar charts.",
    )
    coloring.add_argument(
        "--force-color",
        action="store_true",
        help="Force colorize even when `stdout` is not a TTY terminal.",
    )
    coloring.add_argument(
        "--light", action="store_true", help="Tweak visual results for light theme terminals."
    )
    coloring.add_argument(
        "--gpu-util-thresh",
        type=int_option,
        nargs=2,
        choices=range(1, 100),
        metavar=("th1", "th2"),
        help="Thresholds of GPU utilization (defaults: 10 75).",
    )
    coloring.add_argument(
        "--mem-util-thresh",
        type=int_option,
        nargs=2,
        choices=range(1, 100),
        metavar=("th1", "th2"),
        help="Thresholds of GPU memory percent (defaults: 10 80).",
    )
    devices = parser.add_argument_group("device filtering")
    devices.add_argument(
        "--only",
        "-o",
        type=int_option,
        nargs="+",
        metavar="INDEX",
        help="Only show the specified devices.",
    )
    processes = parser.add_argument_group("process filtering")
    processes.add_argument(
        "--compute",
        "-c",
        action="store_true",
        help="Only show GPU processes with the compute context.",
    )
    processes.add_argument(
        "--only-compute",
        "-C",
        action="store_true",
        help="Only show GPU processes exactly with the compute context.",
    )
    processes.add_argument(
        "--graphics",
        "-g",
        action="store_true",
        help="Only show GPU processes with the graphics context.",
    )
    processes.add_argument(
        "--only-graphics",
        "-G",
        action="store_true",
        help="Only show GPU processes exactly with the graphics context.",
    )
    processes.add_argument(
        "--user",
        "-u",
        type=str,
        nargs="*",
        metavar="USERNAME",
        help="Only show processes of the given users (or `$USER`).",
    )
    processes.add_argument(
        "--pid",
        "-p",
        type=int_option,
        nargs="+",
        metavar="PID",
        help="Only show processes of the given PIDs.",
    )
    fake = parser.add_argument_group("fakehw")
    fake.add_argument(
        "--cluster",
        action="store_true",
        help="Show every GPU of the fake cluster as a grid, grouped by node.",
    )
    fake.add_argument(
        "--real-host",
        action="store_true",
        help="Show this machine in the host panel instead of the fake node's server.",
    )
    return parser  # fmt: skip


def terminal_width() -> int:
    return max(79, shutil.get_terminal_size(fallback=(79, 24)).columns)


def once_lines(frame: Frame, width: int) -> list[view.Line]:
    """What ``nvitop -1`` prints at a terminal of ``width`` columns."""
    rows = frame.rows()
    device_width = width if width >= 100 and frame.node["gpus"] else 79
    print_width = min(device_width, view.process_print_width(rows, width))
    width = max(print_width, min(width, 140)) if frame.node["gpus"] else 79
    superuser = os.geteuid() == 0
    return [
        *view.device_lines(frame.snapshot, frame.node, width),
        *view.host_lines(frame.figures, width),
        [("", "")],
        *view.process_lines(rows, width, frame.user_context, superuser),
    ]


def print_once(source: Source, args: argparse.Namespace) -> None:
    lines = once_lines(source.frame(), terminal_width())
    color = args.force_color or sys.stdout.isatty()
    render = view.ansi if color else view.plain
    text = "\n".join(render(line) for line in lines)
    if args.no_unicode:
        text = text.translate(ASCII)
    print(text)


# box drawing and bars to ASCII, as nvitop's --no-unicode does
ASCII = str.maketrans(
    "═─╴╒╤╕╪╘╧╛┌┬┐┼└┴┘│╞╡├┤▏▎▍▌▋▊▉█░▲▼␤",
    "=--++++++++++++++||||||||||||||^v?",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gpu_util_thresh:
        view.GPU_THRESHOLDS = (min(args.gpu_util_thresh), max(args.gpu_util_thresh))
    if args.mem_util_thresh:
        view.MEMORY_THRESHOLDS = (min(args.mem_util_thresh), max(args.mem_util_thresh))
    if args.interval is not None and args.interval < 0.25:
        build_parser().error(f"the interval {args.interval:0.2g}s is too short")
    if args.cluster:
        for flag, value in (("--only", args.only), ("--pid", args.pid), ("--user", args.user)):
            if value is not None:
                build_parser().error(
                    f"argument --cluster: not allowed with {flag} (the grid shows every GPU of "
                    "every node; the filters apply to one node's view)"
                )
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    monitor = getattr(args, "monitor", None) if hasattr(args, "monitor") else None
    wants_monitor = hasattr(args, "monitor") or (not args.once and tty)
    messages = []
    if wants_monitor and not tty:
        if hasattr(args, "monitor"):
            messages.append("ERROR: You must run monitor mode from a TTY terminal.")
        wants_monitor = False
    raise_on_termination()
    try:
        source = Source(args)
        if args.only:
            count = len(source.snapshot()["nodes"][0]["gpus"])
            invalid = sorted(set(args.only) - set(range(count)))
            if len(invalid) > 1:
                messages.append(f"ERROR: Invalid device indices: {invalid}.")
            elif invalid:
                messages.append(f"ERROR: Invalid device index: {invalid[0]}.")
        if args.cluster:
            from fakehw.nvitop.grid import print_once as print_grid
            from fakehw.nvitop.grid import run_live as run_grid

            if wants_monitor:
                run_grid(source, args)
            else:
                print_grid(source, args)
        elif wants_monitor:
            from fakehw.nvitop.app import run as run_monitor

            run_monitor(source, args, mode=monitor or os.environ.get("NVITOP_MONITOR_MODE", "auto"))
        else:
            print_once(source, args)
    except NvmlError as exc:
        red = "\x1b[1m\x1b[31m" if sys.stderr.isatty() else ""
        print(f"{red}NVML ERROR:{chr(27) + '[0m' if red else ''} {exc}", file=sys.stderr)
        return 1
    except Terminated as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    for message in messages:
        print(message, file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
