"""``fake-nvidia-smi``: nvidia-smi's command line, answered from the shared model.

Parses options the way nvidia-smi 580 does (``-i 0``, ``--id=0``, ``-l``,
``-lms 100``, ``--query-gpu=... --format=csv,noheader``, sub-commands
``dmon``, ``pmon``, ``topo``, ``nvlink``) and answers with its messages and
exit codes. The GPUs are those of one node of the fake cluster: node 0, or
the one ``FAKEHW_NODE`` names (index or hostname).

Kept light on purpose: a one-shot table imports no numpy and no argparse.
"""

from __future__ import annotations

import os
import sys
import time

from fakehw import TYPE_CHECKING
from fakehw.programs.launch import open_output
from fakehw.programs.signals import EXIT_INTERRUPTED, Terminated, raise_on_termination
from fakehw.smi.common import (
    DRIVER_UNREACHABLE,
    EXIT_DRIVER_NOT_LOADED,
    EXIT_INVALID_ARGUMENT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNKNOWN_OPTION,
    INVALID_ARGUMENTS,
    NO_DEVICES,
    SmiError,
    is_ascii_number,
    select_gpus,
    split_ids,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, TypeVar

    from fakehw.contract.snapshot import GpuRecord, NodeRecord, Snapshot
    from fakehw.views.source import SourceFailed

    T = TypeVar("T")


DEFAULT_LOOP_S = 5
# The real tool documents no upper bound for -l, -lms, dmon -d or -c (pmon -d: 10 s). The
# fake takes up to a signed 32-bit count of milliseconds (24.8 days); a larger value is an
# invalid argument (exit 2), never a failure to reach the driver.
MAX_LOOP_MS = 2**31 - 1
MAX_LOOP_S = MAX_LOOP_MS // 1000
MAX_COUNT = 2**31 - 1
PMON_MAX_DELAY_S = 10  # pmon -h: "[default=1sec, max=10secs]"


def _data(name: str) -> str:
    path = os.path.join(os.path.dirname(__file__), "data", name)
    with open(path) as handle:
        return handle.read()


def unknown_option(option: str) -> SmiError:
    if option.startswith("-"):
        text = f"ERROR: Option {option} is not recognized. Please run 'nvidia-smi -h'.\n"
    else:
        text = f"ERROR: Option {option} is not recognized. Please run 'nvidia-smi -h' for help.\n"
    return SmiError(text, EXIT_UNKNOWN_OPTION)


def invalid() -> SmiError:
    return SmiError(INVALID_ARGUMENTS + "\n", EXIT_INVALID_ARGUMENT)


# --------------------------------------------------------------- arguments
class Args:
    """Options of the main command (not of dmon, pmon, topo, nvlink)."""

    def __init__(self) -> None:
        self.help = self.version = self.list_gpus = self.query = self.xml = False
        self.help_query_gpu = self.help_query_apps = False
        self.display: str | None = None
        self.ids: list[str] | None = None
        self.filename: str | None = None
        self.loop_ms: int | None = None
        self.query_gpu: str | None = None
        self.query_apps: str | None = None
        self.format: str | None = None


class Tokens:
    """Reads ``-o value``, ``-o=value``, ``--option value`` and ``--option=value``."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.position = 0

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        while self.position < len(self.argv):
            token = self.argv[self.position]
            self.position += 1
            if token.startswith("-") and "=" in token:
                name, _, value = token.partition("=")
                yield name, value
            else:
                yield token, None

    def value(self, option: str, inline: str | None) -> str:
        if inline is not None:
            return inline
        if self.position >= len(self.argv):
            raise invalid()
        self.position += 1
        return self.argv[self.position - 1]

    def optional_number(self, inline: str | None) -> str | None:
        if inline is not None:
            return inline
        if self.position < len(self.argv) and is_ascii_number(self.argv[self.position]):
            self.position += 1
            return self.argv[self.position - 1]
        return None


def _number(text: str, maximum: int) -> int:
    """A count or an interval as nvidia-smi reads one: ASCII digits, from 1 to ``maximum``."""
    if not is_ascii_number(text) or len(text.lstrip("0")) > len(str(maximum)):
        raise invalid()  # (the length first: int() refuses more than 4300 digits)
    value = int(text)
    if not 1 <= value <= maximum:
        raise invalid()
    return value


def parse(argv: list[str]) -> Args:
    args = Args()
    tokens = Tokens(argv)
    flags = {
        "-h": "help", "--help": "help", "--version": "version",
        "-L": "list_gpus", "--list-gpus": "list_gpus",
        "-q": "query", "--query": "query", "-x": "xml", "--xml-format": "xml",
        "--help-query-gpu": "help_query_gpu",
        "--help-query-compute-apps": "help_query_apps",
    }  # fmt: skip
    for option, inline in tokens:
        if option in flags:
            if inline is not None:
                raise unknown_option(f"{option}={inline}")
            setattr(args, flags[option], True)
        elif option in ("-i", "--id"):
            args.ids = split_ids(tokens.value(option, inline))
        elif option in ("-d", "--display"):
            args.display = tokens.value(option, inline)
        elif option in ("-f", "--filename"):
            args.filename = tokens.value(option, inline)
        elif option in ("-l", "--loop"):
            seconds = tokens.optional_number(inline)
            args.loop_ms = 1000 * (
                DEFAULT_LOOP_S if seconds is None else _number(seconds, MAX_LOOP_S)
            )
        elif option in ("-lms", "--loop-ms"):
            args.loop_ms = _number(tokens.value(option, inline), MAX_LOOP_MS)
        elif option == "--query-gpu":
            args.query_gpu = tokens.value(option, inline)
        elif option == "--query-compute-apps":
            args.query_apps = tokens.value(option, inline)
        elif option == "--format":
            args.format = tokens.value(option, inline)
        else:
            raise unknown_option(option)
    return args


# ------------------------------------------------------------- the source
def _failed(exc: SourceFailed, node: int | str | None) -> SmiError:
    """nvidia-smi's answer when the daemon cannot be read: no devices for a node that
    does not exist, the driver not loaded otherwise (the reason on a line of its own)."""
    if exc.code == "not_found":
        print(f"fakehw: FAKEHW_NODE={node}: {exc.message}", file=sys.stderr)
        return SmiError(NO_DEVICES, EXIT_NOT_FOUND)
    print(f"fakehw: {exc}", file=sys.stderr)
    return SmiError(DRIVER_UNREACHABLE, EXIT_DRIVER_NOT_LOADED)


class Source:
    """The node this fake nvidia-smi runs on (``fakehw.views.source``), its failures in
    nvidia-smi's words."""

    def __init__(self) -> None:
        from fakehw.views.source import DaemonSource, SourceFailed

        try:
            # resilient: a -l loop carries on through a daemon restart
            self.daemon = DaemonSource("fake-nvidia-smi")
        except SourceFailed as exc:
            raise _failed(exc, None) from None

    def snapshot(self, detail: bool = False) -> tuple[Snapshot, NodeRecord]:
        from fakehw.views.source import SourceFailed

        try:
            snapshot = self.daemon.snapshot(detail)
        except SourceFailed as exc:
            raise _failed(exc, self.daemon.node) from None
        return snapshot, snapshot["nodes"][0]

    def stream(
        self, interval_ms: int, detail: bool = False
    ) -> Iterator[tuple[Snapshot, NodeRecord]]:
        """Snapshots the daemon pushes every ``interval_ms`` (within its subscription range)."""
        from fakehw.service import protocol as proto
        from fakehw.views.source import SourceFailed

        interval_ms = max(proto.MIN_SUBSCRIBE_INTERVAL_MS, interval_ms)
        try:
            for snapshot in self.daemon.subscribe(interval_ms, detail):
                yield snapshot, snapshot["nodes"][0]
        except SourceFailed as exc:
            raise _failed(exc, self.daemon.node) from None

    def poll(self, interval_ms: int, detail: bool = False) -> Iterator[tuple[Snapshot, NodeRecord]]:
        """A snapshot now and one every ``interval_ms`` after, asked for in turn: for intervals
        longer than a subscription takes. The cadence is kept from the first snapshot, as the
        daemon keeps a subscription's, so the time a frame takes to fetch and print does not
        add up."""

        interval_s = interval_ms / 1000
        due = time.monotonic()
        while True:
            yield self.snapshot(detail)
            due = next_due(due, interval_s, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))

    def frames(
        self, loop_ms: int | None, detail: bool = False, count: int | None = None
    ) -> Iterator[tuple[Snapshot, NodeRecord]]:
        """One snapshot, or one per interval until interrupted (or ``count``)."""
        from fakehw.service import protocol as proto

        if loop_ms is None:
            yield self.snapshot(detail)
            return
        if loop_ms > proto.MAX_SUBSCRIBE_INTERVAL_MS:
            stream = self.poll(loop_ms, detail)
        else:
            stream = self.stream(loop_ms, detail)
        for n, frame in enumerate(stream):
            if count is not None and n >= count:
                return
            yield frame


def next_due(due: float, interval_s: float, now: float) -> float:
    """The moment after ``due`` on a cadence of ``interval_s``; after a stall, from ``now``."""
    due += interval_s
    return due if due > now else now + interval_s


# ---------------------------------------------------------------- commands
def run(args: Args, out: IO[str]) -> int:
    if args.help:
        out.write(_data("help.txt"))
        return EXIT_OK
    if args.help_query_gpu:
        out.write(_data("help_query_gpu.txt"))
        return EXIT_OK
    if args.help_query_apps:
        out.write(_data("help_query_compute_apps.txt"))
        return EXIT_OK
    if args.version:
        from fakehw.contract import versions

        out.write(
            f"NVIDIA-SMI version  : {versions.DRIVER_VERSION}\n"
            f"NVML version        : {versions.NVSMI_NVML_VERSION}\n"
            f"DRIVER version      : {versions.DRIVER_VERSION}\n"
            f"CUDA Version        : {versions.CUDA_VERSION}\n"
        )
        return EXIT_OK
    queries = [q for q in (args.query_gpu, args.query_apps) if q is not None]
    if len(queries) > 1 or (queries and (args.query or args.list_gpus)):
        raise invalid()
    if (args.xml or args.display) and not args.query:
        raise invalid()
    if args.format is not None and not queries:
        raise invalid()
    if args.query_gpu is not None:
        return _query_gpu(args, out)
    if args.query_apps is not None:
        return _query_apps(args, out)
    if args.list_gpus:
        snapshot, node = Source().snapshot()
        for gpu in select_gpus(node, args.ids):
            name = snapshot["models"][gpu["model"]]["name"]
            out.write(f"GPU {gpu['index']}: {name} (UUID: {gpu['uuid']})\n")
        return EXIT_OK
    if args.query:
        return _detailed(args, out)
    return _table(args, out)


def _table(args: Args, out: IO[str]) -> int:
    from fakehw.smi import table

    for snapshot, node in Source().frames(args.loop_ms):
        out.write(table.render(snapshot, node, select_gpus(node, args.ids)))
        out.flush()
    return EXIT_OK


def _detailed(args: Args, out: IO[str]) -> int:
    from fakehw.smi import details

    groups = None
    if args.display is not None:
        if args.xml:  # "-d ... Doesn't work with -u or -x flags."
            raise invalid()
        try:
            groups = details.parse_groups(args.display)
        except ValueError:
            raise invalid() from None
    for snapshot, node in Source().frames(args.loop_ms, detail=groups is not None):
        gpus = select_gpus(node, args.ids)
        if args.xml:
            out.write(details.report_xml(snapshot, node, gpus))
        else:
            out.write(details.report_text(snapshot, node, gpus, groups))
        out.flush()
    return EXIT_OK


def _format_options(text: str | None) -> tuple[bool, bool]:
    """``--format`` -> (header, units); csv is implied, as nvidia-smi does."""
    options = {part.strip() for part in (text or "csv").split(",") if part.strip()}
    if not options <= {"csv", "noheader", "nounits"}:
        raise invalid()
    return "noheader" not in options, "nounits" not in options


def _chosen_fields(args: Args, resolve: Callable[[list[str]], list[T]], text: str | None
                   ) -> tuple[list[T], bool, bool]:  # fmt: skip
    """The fields a ``--query-*`` list names, and ``--format``'s (header, units)."""
    from fakehw.smi import fields

    header, units = _format_options(args.format)
    try:
        chosen = resolve(fields.split_field_list(text or ""))
    except fields.UnknownField as exc:
        raise SmiError(f"{exc}\n", EXIT_INVALID_ARGUMENT) from None
    if not chosen:
        raise invalid()
    return chosen, header, units


def _query_gpu(args: Args, out: IO[str]) -> int:
    from fakehw.smi import fields

    chosen, header, units = _chosen_fields(args, fields.resolve, args.query_gpu)
    if header:
        out.write(fields.csv_header(chosen) + "\n")
    for snapshot, node in Source().frames(args.loop_ms):
        asked = time.time()  # the moment of the query, as the real tool stamps its rows
        for gpu in select_gpus(node, args.ids):
            context = fields.FieldContext.of(snapshot, node, gpu, at=asked)
            out.write(fields.csv_row(chosen, context, units) + "\n")
        out.flush()
    return EXIT_OK


def _query_apps(args: Args, out: IO[str]) -> int:
    from fakehw.smi import fields

    chosen, header, units = _chosen_fields(args, fields.resolve_apps, args.query_apps)
    if header:
        out.write(", ".join(f.header for f in chosen) + "\n")
    for snapshot, node in Source().frames(args.loop_ms):
        asked = time.time()
        gpus = {g["index"]: g for g in select_gpus(node, args.ids)}
        for process in node["processes"]:
            gpu = gpus.get(process["gpu_index"])
            if gpu is None:
                continue
            gpu_context = fields.FieldContext.of(snapshot, node, gpu, at=asked)
            context = fields.AppContext(gpu_context, process)
            out.write(", ".join(f.format_value(context, units) for f in chosen) + "\n")
        out.flush()
    return EXIT_OK


# ------------------------------------------------------------ sub-commands
def _monitor_args(argv: list[str], allowed: dict[str, str], help_name: str) -> dict[str, str]:
    """Options of dmon/pmon/topo/nvlink: ``allowed`` maps spellings to keys."""
    values: dict[str, str] = {}
    tokens = Tokens(argv)
    for option, inline in tokens:
        key = allowed.get(option)
        if key is None:
            raise SmiError(
                f"ERROR: Option {option} is not recognized. Please run "
                f"'nvidia-smi {help_name} -h'.\n",
                EXIT_UNKNOWN_OPTION,
            )
        if key.endswith("?"):  # a flag
            values[key[:-1]] = "1"
        else:
            values[key] = tokens.value(option, inline)
    return values


def _count(values: dict[str, str]) -> int | None:
    return _number(values["count"], MAX_COUNT) if "count" in values else None


def _delay_ms(values: dict[str, str], maximum_s: int = MAX_LOOP_S) -> int:
    return 1000 * _number(values.get("delay", "1"), maximum_s)


# dmon's and pmon's options (they take the same): option -> value name; "?": a flag
MONITOR_OPTIONS = {
    "-i": "ids", "--id": "ids", "-d": "delay", "--delay": "delay", "-c": "count",
    "--count": "count", "-s": "select", "--select": "select", "-o": "options",
    "--options": "options", "-f": "file", "--filename": "file", "-h": "help?",
    "--help": "help?",
}  # fmt: skip


def dmon(argv: list[str], out: IO[str]) -> int:
    from fakehw.smi import monitors

    values = _monitor_args(argv, MONITOR_OPTIONS, "dmon")
    if "help" in values:
        out.write(_data("dmon_help.txt"))
        return EXIT_OK
    try:
        columns = monitors.dmon_columns(values.get("select", monitors.DMON_DEFAULT))
    except ValueError:
        raise invalid() from None
    stamp = monitors.Stamp(values.get("options", "").upper())
    ids = split_ids(values["ids"]) if "ids" in values else None
    previous: dict[int, GpuRecord] = {}
    last_time: float | None = None
    delay_ms, count = _delay_ms(values), _count(values)
    frames = Source().frames(delay_ms, count=count)
    for printed, (snapshot, node) in enumerate(frames):
        gpus = select_gpus(node, ids)[:16]
        if printed % monitors.DMON_HEADER_EVERY == 0:
            out.write("\n".join(monitors.dmon_header(columns, stamp)) + "\n")
        elapsed = 0.0 if last_time is None else snapshot["time"] - last_time
        rows = monitors.dmon_rows(snapshot, gpus, columns, stamp, previous, elapsed)
        out.write("\n".join(rows) + "\n")
        out.flush()
        previous = {g["index"]: g for g in gpus}
        last_time = snapshot["time"]
    return EXIT_OK


def pmon(argv: list[str], out: IO[str]) -> int:
    from fakehw.smi import monitors

    values = _monitor_args(argv, MONITOR_OPTIONS, "pmon")
    if "help" in values:
        out.write(_data("pmon_help.txt"))
        return EXIT_OK
    select = values.get("select", "u")
    if not select or set(select) - {"u", "m"}:
        raise invalid()
    stamp = monitors.Stamp(values.get("options", "").upper())
    ids = split_ids(values["ids"]) if "ids" in values else None
    delay_ms, count = _delay_ms(values, PMON_MAX_DELAY_S), _count(values)
    header = monitors.pmon_header("m" in select, "u" in select, stamp)
    out.write("\n".join(header) + "\n")
    for snapshot, node in Source().frames(delay_ms, count=count):
        gpus = select_gpus(node, ids)[:4]
        rows = monitors.pmon_rows(snapshot, node, gpus, "m" in select, "u" in select, stamp)
        out.write("\n".join(rows) + "\n")
        out.flush()
    return EXIT_OK


def topo(argv: list[str], out: IO[str]) -> int:
    from fakehw.smi import topology

    values = _monitor_args(
        argv,
        {"-m": "matrix?", "--matrix": "matrix?", "-mp": "matrix_pci?",
         "--matrix_pci": "matrix_pci?", "-p2p": "p2p", "--p2pstatus": "p2p",
         "-h": "help?", "--help": "help?"},
        "topo",
    )  # fmt: skip
    if "help" in values or not values:
        out.write(_data("topo_help.txt"))
        return EXIT_OK
    snapshot, node = Source().snapshot()
    if "p2p" in values:
        if values["p2p"] not in topology.P2P_CAPABILITIES:
            raise invalid()
        out.write(topology.p2p(snapshot, node, values["p2p"]))
    else:
        out.write(topology.matrix(snapshot, node, pci_only="matrix_pci" in values))
    return EXIT_OK


NVLINK_HELP = """
    nvlink -- Display NvLink information.

    Usage: nvidia-smi nvlink [options]

    Options include:
    [-h | --help]: Display help information
    [-i | --id]: Enumeration index, PCI bus ID or UUID.

    [-s | --status]: Display link state (active/inactive).

    [-c | --capabilities]: Display link capabilities.

"""


def nvlink(argv: list[str], out: IO[str]) -> int:
    from fakehw.smi import topology

    values = _monitor_args(
        argv,
        {"-s": "status?", "--status": "status?", "-c": "capabilities?",
         "--capabilities": "capabilities?", "-i": "ids", "--id": "ids",
         "-h": "help?", "--help": "help?"},
        "nvlink",
    )  # fmt: skip
    if "help" in values or not ({"status", "capabilities"} & set(values)):
        out.write(NVLINK_HELP)
        return EXIT_OK
    snapshot, node = Source().snapshot()
    gpus = select_gpus(node, split_ids(values["ids"]) if "ids" in values else None)
    if "status" in values:
        out.write(topology.nvlink_status(snapshot, node, gpus))
    if "capabilities" in values:
        out.write(topology.nvlink_capabilities(snapshot, node, gpus))
    return EXIT_OK


SUBCOMMANDS: dict[str, Callable[[list[str], IO[str]], int]] = {
    "dmon": dmon,
    "pmon": pmon,
    "topo": topo,
    "nvlink": nvlink,
}


# --------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    raise_on_termination()
    out: IO[str] = sys.stdout
    try:
        if args and args[0] in SUBCOMMANDS:
            command, rest = SUBCOMMANDS[args[0]], args[1:]
            filename = _file_option(rest)
            if filename is not None:
                out = open_output(filename)  # closed below
            return command(rest, out)
        parsed = parse(args)
        if parsed.filename is not None:
            out = open_output(parsed.filename)  # closed below
        return run(parsed, out)
    except SmiError as exc:
        stream = sys.stderr if exc.to_stderr else sys.stdout
        stream.write(exc.message if exc.message.endswith("\n") else exc.message + "\n")
        if exc.code in (EXIT_UNKNOWN_OPTION, EXIT_INVALID_ARGUMENT):
            stream.write("\n")
        stream.flush()
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated as exc:
        return exc.exit_code
    except OSError as exc:
        if exc.filename is None:
            # Writing the output failed (a full disk, a reader gone: `| head`), to standard
            # output or to FILE: fakehw.programs.launch ends the program, as for every program.
            raise
        print(f"Failed to open file {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID_ARGUMENT
    finally:
        if out is not sys.stdout:
            out.close()  # what is still buffered is written: a failure, as a write's


def _file_option(argv: list[str]) -> str | None:
    for position, token in enumerate(argv):
        if token in ("-f", "--filename") and position + 1 < len(argv):
            return argv[position + 1]
        if token.startswith(("-f=", "--filename=")):
            return token.partition("=")[2]
    return None


if __name__ == "__main__":
    sys.exit(main())
