"""``fake-dcgmi SUBSYSTEM ...``: the command line, one function per subsystem. Every
failure is a ``DcgmiError`` (its lines, its stream, DCGM's status as the exit code);
nothing here formats a table or reads a GPU."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

from fakehw.dcgm.catalog import FieldMeta
from fakehw.dcgm.values import Subject
from fakehw.dcgmi import diag, discovery, dmon, health, status
from fakehw.dcgmi.engine import (
    DEFAULT_HOST,
    EntityListError,
    HostEngine,
    by_index,
    connection_failed,
    gpu_ids,
    is_local,
    subjects,
)
from fakehw.dcgmi.options import FORMAL_NAME, Command, HelpRequested, Parsed, space_print
from fakehw.programs.signals import Terminated, raise_on_termination


def _connect(parsed: Parsed) -> HostEngine:
    return HostEngine(str(parsed.get("host", DEFAULT_HOST)))


def run_discovery(parsed: Parsed, out: IO[str]) -> int:
    engine = _connect(parsed)
    try:
        found = subjects(engine.snapshot())
    finally:
        engine.close()
    _write(out, discovery.render(found, show_all=bool(parsed.get("all", False))))
    return status.OK


def _dmon_checks(parsed: Parsed) -> None:
    """dmon's own checks of its parsed command line (``CmdLineParseException``, exit 254)."""
    if parsed.given("list") and any(
        parsed.given(n) for n in ("group-id", "entity-id", "delay", "count")
    ):
        raise status.ParseFailed("Invalid parameters with list arg. Usage : dmon -l")
    if parsed.given("group-id") and parsed.given("entity-id"):
        raise status.ParseFailed("Only one of --entity-id and --group-id can be provided")
    if int(parsed.get("delay", 1000)) < 1:
        raise status.ParseFailed("Invalid value", "delay")
    if int(parsed.get("count", 0)) < 0:
        raise status.ParseFailed("Positive value expected, negative value found", "count")
    field_ids = str(parsed.get("field-id", "0"))
    if not field_ids[:1].isdigit():
        raise status.ParseFailed("Invalid value", "field-id")


def _dmon_gpus(parsed: Parsed, found: list[Subject]) -> list[Subject]:
    """The GPUs ``-i`` names (all of them by default), or DCGM's refusal of one it lacks."""
    if not parsed.given("entity-id"):
        return found
    try:
        ids = gpu_ids(str(parsed.get("entity-id", "")))
    except EntityListError as exc:
        raise status.DcgmiError([exc.message], status.BADPARAM, "stderr") from None
    known = by_index(found)
    for index in ids:
        if index not in known:
            raise status.DcgmiError(
                [
                    f"Error: Got error {status.BADPARAM} {status.ERROR_STRINGS[status.BADPARAM]} "
                    f"while adding GPU {index} to our entity group."
                ],
                status.BADPARAM,
                "stderr",
            )
    return [known[index] for index in ids]


def run_dmon(parsed: Parsed, out: IO[str]) -> int:
    _dmon_checks(parsed)
    engine = _connect(parsed)
    try:
        if parsed.given("list"):
            _write(out, dmon.list_lines(_columns(out)))
            return status.OK
        if parsed.given("group-id") and str(parsed.get("group-id", "")) not in ("0", "all_gpus"):
            group = str(parsed.get("group-id", ""))
            if not group.isdigit():
                raise status.DcgmiError(
                    [f"Expected a numerical groupId. Instead, got '{group}'"],
                    status.BADPARAM,
                    "stderr",
                )
            raise status.DcgmiError(
                [
                    f"Unable to retrieve information about group. Error: {status.NOT_CONFIGURED}: "
                    "The Group is not found"
                ],
                status.NOT_CONFIGURED,
                "stderr",
            )
        if parsed.given("field-group-id"):
            number = parsed.get("field-group-id", 0)
            raise status.DcgmiError(
                [
                    f"Unable to retrieve information about field group {number}. Error: "
                    f"{status.NOT_CONFIGURED}: The Field Group is not found"
                ],
                status.BADPARAM,
                "stderr",
            )
        gpus = [int(s.gpu["index"]) for s in _dmon_gpus(parsed, subjects(engine.snapshot()))]
        chosen = dmon.parse_field_ids(str(parsed.get("field-id", "")))
        return _monitor(
            engine, gpus, chosen, int(parsed.get("delay", 1000)), int(parsed.get("count", 0)), out
        )
    finally:
        engine.close()


def _monitor(
    engine: HostEngine,
    gpus: list[int],
    chosen: list[FieldMeta],
    delay_ms: int,
    count: int,
    out: IO[str],
) -> int:
    """dmon's loop: the header, then a row per GPU per sample, every ``delay_ms`` on a
    schedule that does not drift; ``count`` samples (0: until Ctrl-C)."""
    _write(out, dmon.header(chosen))
    schedule = dmon.HeaderSchedule()
    remaining = count
    due = time.monotonic()
    try:
        while True:
            now = by_index(subjects(engine.snapshot()))
            _write(out, [dmon.row(now[gpu], chosen) for gpu in gpus if gpu in now])
            if count:
                remaining -= 1
                if remaining <= 0:
                    return status.OK
            due += delay_ms / 1000
            time.sleep(max(0.0, due - time.monotonic()))
            if schedule.after_sample():
                _write(out, dmon.header(chosen))
    except KeyboardInterrupt:
        out.write(dmon.STOPPED + "\n")
        out.flush()
        return status.OK


def run_health(parsed: Parsed, out: IO[str]) -> int:
    as_json = bool(parsed.get("json", False))
    group = health.parse_group(str(parsed.get("group", health.DEFAULT_GROUP)))
    mask = health.parse_set(str(parsed.get("set", ""))) if parsed.given("set") else None
    engine = _connect(parsed)
    try:
        if mask is not None or parsed.given("clear"):
            health.check_group(group, "set")
            engine.health_watches(0 if mask is None else mask)
            _write(out, [health.SET_SUCCESSFULLY])
        elif parsed.given("fetch"):
            health.check_group(group, "get")
            _write(out, health.fetch_lines(engine.health_watches(), as_json))
        else:
            health.check_group(group, "check")
            watches = engine.health_watches()
            if not watches:
                raise status.DcgmiError([health.NOT_ENABLED], status.GENERIC_ERROR)
            found = health.incidents(subjects(engine.snapshot()), watches)
            _write(out, health.check_lines(found, as_json))
    finally:
        engine.close()
    return status.OK


def run_diag(parsed: Parsed, out: IO[str]) -> int:
    diag.check_level(str(parsed.get("run", "")))  # none given: no test named
    if parsed.given("entity-id") and parsed.given("group"):
        raise status.ParseFailed("Specifying a group id and a entity id are mutually exclusive")
    host = str(parsed.get("host", DEFAULT_HOST))
    if parsed.given("host") and not is_local(host):
        # dcgmi says so, then runs the diagnostic in an embedded host engine: this machine's
        _write(out, connection_failed(host).lines[:1])
    group = str(parsed.get("group", 0))
    if group != "0":
        raise status.DcgmiError(
            [
                f"Error: Unable to complete diagnostic for group {group}. Return: "
                f"({status.NOT_CONFIGURED}) : {status.ERROR_STRINGS[status.NOT_CONFIGURED]}",
                "",
            ],
            status.NOT_CONFIGURED,
        )
    engine = HostEngine(DEFAULT_HOST)
    try:
        snapshot = engine.snapshot()
    finally:
        engine.close()
    entity_ids = str(parsed.get("entity-id", "")) if parsed.given("entity-id") else None
    chosen = diag.select(subjects(snapshot), entity_ids)
    render = diag.render_json if parsed.given("json") else diag.render
    lines, code = render(chosen, snapshot["driver_version"])
    _write(out, lines)
    return code


SUBSYSTEMS: dict[str, tuple[Command, Callable[[Parsed, IO[str]], int]]] = {
    "discovery": (discovery.COMMAND, run_discovery),
    "dmon": (dmon.COMMAND, run_dmon),
    "health": (health.COMMAND, run_health),
    "diag": (diag.COMMAND, run_diag),
}
# (DCGM's own descriptions, en dashes and all: CommandLineParser.cpp)
SUBSYSTEM_HELP = {
    "discovery": "Discover GPUs on the system [dcgmi discovery \u2013h for more info]",
    "dmon": "Stats Monitoring of GPUs [dcgmi dmon \u2013h for more info]",
    "health": "Health Monitoring [dcgmi health \u2013h for more info]",
    "diag": "System Validation/Diagnostic [dcgmi diag \u2013h for more info]",
}
FOOTER = "Please email dcgm-support@nvidia.com with any questions, bug reports, etc.\n"


def usage_lines() -> list[str]:
    """The top-level usage (``DCGMEntryOutput``), of the subsystems fake-dcgmi has: each
    as ``_longUsage`` writes an unflagged argument, then the help switch, the footer and
    DCGM's name."""
    lines = ["", " ", "", "Usage: dcgmi", "   dcgmi <subsystem> ", "", "Flags:"]
    for name, text in SUBSYSTEM_HELP.items():
        lines += space_print(f"{'      ' + name:<17} {text}", 80, 2, 19)
    lines += space_print(f"{'-h  --help':<17} Displays usage information and exits.", 80, 2, 19)
    return [*lines, "", *space_print(FOOTER, 80, 1, 0), *space_print(FORMAL_NAME, 80, 1, 0), ""]


def _columns(out: IO[str]) -> int:
    import os

    try:
        return os.get_terminal_size(out.fileno()).columns if out.isatty() else 80
    except (OSError, ValueError):
        return 80


def _write(out: IO[str], lines: list[str]) -> None:
    out.write("".join(line + "\n" for line in lines))
    out.flush()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    raise_on_termination()
    out = sys.stdout
    try:
        if not args or args[0] in ("-h", "--help"):
            _write(out, usage_lines())
            return status.OK
        if args[0] not in SUBSYSTEMS:
            _write(out, ["ERROR: Invalid subsystem.", "", *usage_lines()])
            return status.exit_code(status.BADPARAM)
        command, run = SUBSYSTEMS[args[0]]
        try:
            parsed = command.parse(args[1:])
        except HelpRequested:
            _write(out, command.long_usage())
            return status.OK
        return status.exit_code(run(parsed, out))
    except status.DcgmiError as exc:
        stream = sys.stderr if exc.stream == "stderr" else out
        out.flush()
        _write(stream, exc.lines)
        if exc.note:
            _write(sys.stderr, [f"fake-dcgmi: {exc.note}"])
        return status.exit_code(exc.status)
    except Terminated as exc:
        return exc.exit_code
