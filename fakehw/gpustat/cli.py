"""``fake-gpustat``: gpustat 1.1.1 on the fake GPUs of one node.

The same options, output, colours, JSON and watch mode as the real tool,
reading the fakehw daemon (the node ``FAKEHW_NODE`` names, default 0). A
GPU process is described from psutil when its PID is on this machine (the
ranks fake-train starts are), else from the daemon's record.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from fakehw.gpustat import render
from fakehw.programs.argtypes import ascii_int, float_option
from fakehw.programs.signals import Terminated, raise_on_termination
from fakehw.views.procinfo import HostProcesses

ENTER_FULLSCREEN, EXIT_FULLSCREEN = "\x1b[?1049h\x1b[22;0;0t", "\x1b[?1049l\x1b[23;0;0t"
HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[1;1H", "\x1b[K", "\x1b[J"


class QueryError(Exception):
    """What gpustat reports as "Error on querying NVIDIA devices"."""


def build_parser() -> argparse.ArgumentParser:
    """gpustat's own parser, option for option."""
    parser = argparse.ArgumentParser("gpustat")
    color = parser.add_mutually_exclusive_group()
    color.add_argument(
        "--force-color", "--color", action="store_true", help="Force to output with colors"
    )
    color.add_argument("--no-color", action="store_true", help="Suppress colored output")
    parser.add_argument("--id", help="Target a specific GPU (index).")
    parser.add_argument(
        "-a", "--show-all", action="store_true", help="Display all gpu properties above"
    )
    parser.add_argument(
        "-c", "--show-cmd", action="store_true", help="Display cmd name of running process"
    )
    parser.add_argument(
        "-f",
        "--show-full-cmd",
        action="store_true",
        default=False,
        help="Display full command and cpu stats of running process",
    )
    parser.add_argument(
        "-u", "--show-user", action="store_true", help="Display username of running process"
    )
    parser.add_argument(
        "-p", "--show-pid", action="store_true", help="Display PID of running process"
    )
    parser.add_argument(
        "-F", "--show-fan-speed", "--show-fan", action="store_true", help="Display GPU fan speed"
    )
    parser.add_argument(
        "-e",
        "--show-codec",
        nargs="?",
        const="enc,dec",
        default="",
        choices=["", "enc", "dec", "enc,dec"],
        help="Show encoder/decoder utilization",
    )
    parser.add_argument(
        "-P",
        "--show-power",
        nargs="?",
        const="draw,limit",
        choices=["", "draw", "limit", "draw,limit", "limit,draw"],
        help="Show GPU power usage or draw (and/or limit)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="Print all the information in JSON format",
    )
    parser.add_argument(
        "-i",
        "--interval",
        "--watch",
        nargs="?",
        type=float_option,
        default=0,
        help="Use watch mode if given; seconds to wait between updates",
    )
    parser.add_argument(
        "--no-header",
        dest="show_header",
        action="store_false",
        default=True,
        help="Suppress header message",
    )
    parser.add_argument(
        "--gpuname-width",
        type=_nonnegative_int,
        default=None,
        help="The width at which GPU names will be displayed.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="Allow to print additional informations for debugging.",
    )
    parser.add_argument(
        "--no-processes",
        dest="no_processes",
        action="store_true",
        help="Do not display running process information (memory, user, etc.)",
    )
    parser.add_argument("-v", "--version", action="version", version=f"gpustat {render.VERSION}")
    return parser  # fmt: skip


def _nonnegative_int(value: str) -> int:
    number = ascii_int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("Only non-negative integers are allowed.")
    return number


_nonnegative_int.__name__ = "nonnegative_int"  # gpustat's name, in "invalid nonnegative_int value"


class Source:
    """The node gpustat shows (``fakehw.views.source``), its failures in gpustat's words."""

    def __init__(self) -> None:
        from fakehw.views.source import DaemonSource, SourceFailed

        self.procs = HostProcesses()
        try:
            self.daemon = DaemonSource("fake-gpustat")  # watch mode survives restarts
        except SourceFailed as exc:
            raise QueryError(f"NVML Shared Library Not Found ({exc})") from None

    def query(self, ids: str | None, args: argparse.Namespace) -> str:
        from fakehw.views.source import SourceFailed

        try:
            snapshot = self.daemon.snapshot()
        except SourceFailed as exc:
            reason = f"Unknown Error ({exc})" if exc.unavailable else exc.message
            raise QueryError(reason) from None
        node = snapshot["nodes"][0]
        procs = {r["pid"]: self.procs.lookup(r) for r in node["processes"]}
        self.procs.forget_others(set(procs))
        gpus = render.entries(node, snapshot, procs)
        if ids is not None:
            try:
                wanted = [int(i) for i in ids.split(",")]
            except ValueError:
                raise QueryError(f"invalid literal for int() with base 10: {ids!r}") from None
            by_index = {g["index"]: g for g in gpus}
            if any(i not in by_index for i in wanted):
                raise QueryError("Invalid Argument")
            gpus = [by_index[i] for i in wanted]
        when = datetime.fromtimestamp(snapshot["time"])
        if args.json:
            return render.as_json(node["hostname"], when, snapshot["driver_version"], gpus)
        eol = CLEAR_EOL + "\n" if args.interval else "\n"
        return render.formatted(
            node["hostname"], when, snapshot["driver_version"], gpus, options(args), eol
        )


def options(args: argparse.Namespace) -> render.Options:
    if args.force_color:
        color = True
    elif args.no_color:
        color = False
    else:
        color = sys.stdout.isatty()
    return render.Options(
        show_cmd=args.show_cmd,
        show_full_cmd=args.show_full_cmd,
        show_user=args.show_user,
        show_pid=args.show_pid,
        show_fan_speed=args.show_fan_speed,
        show_codec=args.show_codec,
        show_power=args.show_power,
        gpuname_width=args.gpuname_width,
        show_header=args.show_header,
        no_processes=args.no_processes,
        color=color,
    )


def _fail(exc: Exception) -> int:
    sys.stderr.write("Error on querying NVIDIA devices. Use --debug flag to see more details.\n")
    red = "\x1b[31m" if sys.stderr.isatty() else ""
    sys.stderr.write(f"{red}{exc}{render.NORMAL if red else ''}\n")
    sys.stderr.flush()
    return 1


def watch(source: Source, args: argparse.Namespace) -> int:
    """``gpustat -i``: the full screen redrawn in place; Ctrl-C ends it (exit 0)."""
    out = sys.stdout
    out.write(ENTER_FULLSCREEN)
    try:
        while True:
            started = time.monotonic()
            frame = source.query(args.id, args)
            out.write(HOME + frame + CLEAR_EOS)
            out.flush()
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
    finally:
        out.write(EXIT_FULLSCREEN)
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show_all:
        args.show_cmd = args.show_user = args.show_pid = args.show_fan_speed = True
        args.show_codec = "enc,dec"
        args.show_power = "draw,limit"
    if args.interval is None:
        args.interval = 1.0
    if args.interval > 0:
        args.interval = max(0.1, args.interval)
        if args.json:
            sys.stderr.write("Error: --json and --interval/-i can't be used together.\n")
            return 1
    raise_on_termination()
    try:
        source = Source()
        if args.interval > 0:
            return watch(source, args)
        sys.stdout.write(source.query(args.id, args))
        sys.stdout.flush()
        return 0
    except QueryError as exc:
        return _fail(exc)
    except Terminated as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
