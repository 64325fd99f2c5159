"""``fakehw``: manage the fake cluster's daemon and run the model offline.

    fakehw daemon start|stop|status     the background daemon every tool shares
    fakehw simulate --schedule FILE     synthetic nvidia-smi CSV, no waiting
    fakehw models                       the GPU catalog

Errors are one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from fakehw import __version__
from fakehw.contract.config import ClusterConfig, ConfigError, DaemonConfig, load_settings
from fakehw.programs.argtypes import float_option, int_option
from fakehw.programs.signals import EXIT_INTERRUPTED, Terminated, raise_on_termination
from fakehw.service.client import DaemonUnavailable, RequestFailed
from fakehw.service.protocol import CLEAR_FAULTS, FAULTS, parse_tcp_address
from fakehw.service.runtime import RuntimeDirError, runtime_paths
from fakehw.specs import CATALOG
from fakehw.tools.errors import (
    EXIT_FAILURE,
    EXIT_NOT_ANSWERING,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
)
from fakehw.workload import PHASES

STATUS_TIMEOUT_S = 3.0  # `daemon status` and `stop` say "not answering" after this


class _LineFormatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own, so example lists keep
    one command per line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            lead = indent + line[: len(line) - len(line.lstrip())]
            lines.append(super()._fill_text(line, width, lead))
        return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _LineFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _tcp_address(text: str) -> str:
    """Check a ``--tcp`` value while parsing, so a typo is a usage error (exit 2)."""
    try:
        parse_tcp_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (defaults from the config file)")
    group.add_argument("--gpu-model", metavar="MODEL", help="exact nvidia-smi name or alias")
    group.add_argument("--nodes", type=int_option, metavar="N", help="number of nodes")
    group.add_argument("--gpus-per-node", type=int_option, metavar="N", help="GPUs per node (1-16)")
    group.add_argument("--hostname-prefix", metavar="PREFIX", help='e.g. "dgx-h100-"')
    group.add_argument("--seed", type=int_option, metavar="S", help="seed for identities and noise")


# settings as the flags that set them, for error messages
_FLAG_OF_SETTING = {"gpu_model": "--gpu-model", "nodes": "--nodes",
                    "gpus_per_node": "--gpus-per-node", "hostname_prefix": "--hostname-prefix",
                    "seed": "--seed", "idle_timeout_s": "--idle-timeout", "tick_hz": "--tick-hz",
                    "tcp_listen": "--tcp", "tcp_token_file": "--tcp-token-file"}  # fmt: skip


def _cluster_from(args: argparse.Namespace) -> tuple[ClusterConfig, DaemonConfig, bool]:
    """Config file overlaid with flags; the flag says whether any cluster flag was given.

    A bad config file is a ConfigError (exit 1); a bad flag value a usage error (exit 2).
    """
    cluster, daemon = load_settings()
    changes: dict[str, Any] = {}
    for name in ("gpu_model", "nodes", "gpus_per_node", "hostname_prefix", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    daemon_changes: dict[str, Any] = {}
    for setting, flag in (("idle_timeout_s", "idle_timeout"), ("tick_hz", "tick_hz"),
                          ("tcp_listen", "tcp"), ("tcp_token_file", "tcp_token_file")):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None:
            daemon_changes[setting] = value
    if "tcp_token_file" in daemon_changes:
        if not daemon_changes["tcp_token_file"]:
            raise CliError("--tcp-token-file: the token file name is empty", EXIT_USAGE)
        daemon_changes["tcp_token_file"] = os.path.abspath(daemon_changes["tcp_token_file"])
    try:
        return (
            replace(cluster, **changes).validated(),
            replace(daemon, **daemon_changes).validated(),
            bool(changes),
        )
    except ConfigError as exc:
        raise CliError(_flag_message(str(exc)), EXIT_USAGE) from None


def _flag_message(message: str) -> str:
    """A settings error as the flag that set it: "seed must ..." -> "--seed must ..."."""
    for setting, flag in _FLAG_OF_SETTING.items():
        if message.startswith(setting + " ") or message.startswith(setting + ":"):
            return flag + message[len(setting) :]
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fakehw",
        description="Fake NVIDIA datacenter GPUs: one physical model behind look-alikes of "
        "nvidia-smi, nvitop and a training log.",
        epilog="Environment: FAKEHW_RUNTIME_DIR (where the daemon's socket lives), "
        "FAKEHW_CONFIG (config file, default ~/.config/fakehw/config.toml), FAKEHW_NODE (the "
        "node the viewers show), FAKEHW_REMOTE=HOST:PORT with FAKEHW_TOKEN or "
        "FAKEHW_TOKEN_FILE (view a daemon started with --tcp on another host).",
    )
    parser.add_argument("--version", action="version", version=f"fakehw {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    daemon = commands.add_parser(
        "daemon",
        help="start, stop or inspect the background daemon",
        description="The daemon runs the shared GPU model and serves every viewer. Clients "
        "start it by themselves; it exits after an idle period.",
    )
    actions = daemon.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    start = actions.add_parser("start", help="start the daemon (no-op if it runs)")
    _add_cluster_flags(start)
    start.add_argument("--foreground", action="store_true", help="stay attached, log to stderr")
    start.add_argument(
        "--idle-timeout", type=float_option, metavar="S", help="exit after S idle seconds"
    )
    start.add_argument("--tick-hz", type=float_option, metavar="HZ", help="model steps per second")
    start.add_argument(
        "--tcp",
        type=_tcp_address,
        metavar="[HOST:]PORT",
        help="also serve read-only views over TCP (HOST defaults to 127.0.0.1; 0.0.0.0 opens it "
        "to other hosts); clients need the token (see `fakehw daemon status`) and set "
        "FAKEHW_REMOTE=HOST:PORT and FAKEHW_TOKEN or FAKEHW_TOKEN_FILE",
    )
    start.add_argument(
        "--tcp-token-file",
        metavar="FILE",
        help="the token TCP clients must present (mode 0600; default: a random one in "
        "RUNTIME_DIR/tcp.token)",
    )
    run = actions.add_parser("run", help="run the daemon in this process (what start launches)")
    _add_cluster_flags(run)
    run.add_argument("--runtime-dir", type=Path)
    run.add_argument("--detach", action="store_true")
    run.add_argument("--idle-timeout", type=float_option)
    run.add_argument("--tick-hz", type=float_option)
    run.add_argument("--tcp")
    run.add_argument("--tcp-token-file")
    actions.add_parser("stop", help="stop the daemon")
    status = actions.add_parser(
        "status",
        help="is it running, with which cluster",
        description="Whether the daemon runs, and with which cluster and processes.",
        epilog="Exit status: 0 running, 3 not running, 4 its process is there but does not "
        "answer (stopped with SIGSTOP or Ctrl-Z, or stuck).",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")

    simulate = commands.add_parser(
        "simulate",
        help="run the model offline through a schedule, print nvidia-smi CSV",
        description="Runs the physical model through a schedule of phases on a simulated "
        "clock (no waiting) and prints what `nvidia-smi --query-gpu=FIELDS "
        "--format=csv,nounits -lms N` would print on real GPUs doing that work.",
        epilog='Schedule: {"start": 1795357948.9, "phases": [{"phase": "idle", "seconds": '
        '20}, {"phase": "train", "seconds": 120, "memory_mib": 46617}]}. memory_mib is the '
        "GPU's memory.used from that phase on. Phases: idle (no process on the GPU); "
        + "; ".join(f"{p.name} ({p.description})" for p in PHASES.values())
        + ". examples/ has the real H100 and H200 runs' schedules.",
    )
    simulate.add_argument("--schedule", required=True, type=Path, metavar="FILE")
    simulate.add_argument("--gpu-model", metavar="MODEL", help="default: h100")
    simulate.add_argument("--gpus", type=int_option, default=1, metavar="N", help="GPUs (1-16)")
    simulate.add_argument("--interval-ms", type=int_option, default=100, metavar="MS")
    simulate.add_argument("--query-gpu", metavar="FIELDS", help="nvidia-smi field list")
    simulate.add_argument(
        "--format", default="csv,nounits", metavar="FMT", help="csv[,noheader][,nounits]"
    )
    simulate.add_argument("--seed", type=int_option, default=0, metavar="S")
    simulate.add_argument("--start", type=float_option, metavar="UNIX", help="first sample's time")

    run_with = commands.add_parser(
        "exec",
        help="run a command that sees the fake GPUs as `nvidia-smi`",
        description="Runs COMMAND so that it sees the fake GPUs: `nvidia-smi` on its PATH is "
        "fake-nvidia-smi, and Python programs that use pynvml (nvidia-ml-py), such as nvitop "
        "and gpustat, get the fake NVML library instead of the driver's. Only that command and "
        "its children see them.",
        epilog="Examples: fakehw exec -- nvitop -1\n          fakehw exec -- gpustat -cpu\n"
        "          fakehw exec -- ./collect_gpu_metrics.sh --interval 5",
    )
    run_with.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    commands.add_parser(
        "shellenv",
        help="print shell code that puts the fake nvidia-smi first on PATH",
        description='Prints an `export PATH=...` line; use it as  eval "$(fakehw shellenv)"  '
        "to make `nvidia-smi` the fake one in the current shell.",
    )

    exporter = commands.add_parser(
        "exporter",
        help="serve the GPUs at /metrics as NVIDIA's DCGM exporter does",
        description="Serves every GPU of the fake cluster at /metrics with the DCGM exporter's "
        "metric names, types, help texts and labels (for Prometheus and Grafana).",
    )
    exporter.add_argument(
        "--listen",
        default="127.0.0.1:9400",
        metavar="HOST:PORT",
        help="where to listen, as dcgm-exporter's --address: HOST:PORT, [IPV6]:PORT, or :PORT "
        "for every interface (IPv4 and IPv6, as Go reads it); default 127.0.0.1:9400, loopback "
        "only. /metrics serves every node (up to 8,192 GPUs), /metrics?node=N one node",
    )
    exporter.add_argument("--host-label", choices=("hostname", "Hostname", "both"),
                          default="hostname",
                          help="the node label: hostname (dcgm-exporter since May 2026, the "
                               "default), Hostname (before), or both")  # fmt: skip
    exporter.add_argument(
        "--collectors", "-f", type=Path, metavar="FILE",
        help="the fields to serve, in dcgm-exporter's counters CSV format (FIELD, gauge|counter|"
        "label, help; # comments), as its --collectors/-f; default: its datacenter set with "
        "Hopper's profiling fields (fakehw/dcgm/data/default-counters.csv)",
    )  # fmt: skip
    exporter.add_argument(
        "--print-file-sd", action="store_true",
        help="print Prometheus file_sd JSON with one target per node (this exporter at "
        "/nodes/HOSTNAME/metrics, as a dcgm-exporter DaemonSet gives one per node) and exit; "
        "a running exporter serves the same at /sd for http_sd",
    )  # fmt: skip

    inject = commands.add_parser(
        "inject",
        help="make a GPU misbehave, as every view then shows",
        description="Injects a fault into one GPU of the fake cluster: thermal (cooling "
        "fails: it heats to slowdown and throttles), power-brake (clocks held near their "
        "floor), ecc (corrected errors), ecc-uncorrectable (a double-bit error, XID 48: the "
        "process on it crashes), xid79 (the GPU falls off the bus), rank-crash (the process "
        "on it is killed), clear (a GPU reset: undoes thermal, power-brake and xid79; the "
        "volatile ECC counts move to the aggregate ones, a pending row remapping completes).",
        epilog="Examples: fakehw inject thermal --gpu 3\n"
        "          fakehw inject xid79 --gpu 0 --node 2\n"
        "          fakehw inject clear --gpu 3",
    )
    inject.add_argument("fault", choices=(*FAULTS, CLEAR_FAULTS))
    inject.add_argument(
        "--gpu",
        type=int_option,
        default=0,
        metavar="N",
        help="GPU index on its node, as nvidia-smi numbers it (default 0)",
    )
    inject.add_argument(
        "--node", metavar="N|HOST", help="node index or hostname (default: FAKEHW_NODE, else 0)"
    )
    inject.add_argument("--count", type=int_option, default=1, metavar="N",
                        help="errors to add, for ecc (default 1)")  # fmt: skip

    demo = commands.add_parser(
        "demo",
        help="open a tmux session with fake-train and the viewers, ready to record",
        description="Opens a tmux session (a new window when run inside tmux) with fake-train "
        "and viewers side by side, all on one fake cluster.",
        epilog="Examples: fakehw demo\n          fakehw demo nvitop --seed 7\n"
        "          fakehw demo cluster --nodes 8 --detach\n          fakehw demo --kill",
    )
    from fakehw.tools.demo import add_arguments as add_demo_arguments

    add_demo_arguments(demo)

    plot = commands.add_parser(
        "plot",
        help="draw a training run's curves into a PNG (needs the plot extra: matplotlib)",
        description="Draws loss (raw and smoothed), perplexity, learning rate, gradient "
        "norm, tokens/s, MFU, validation loss and the GPUs' power and temperature against "
        "the step, from what a fake-train run left.",
        epilog="RUN: a fake-train --output-dir, a --metrics-jsonl file or a TensorBoard "
        "directory.\nExamples: fakehw plot runs/demo\n          fakehw plot run.jsonl -o "
        "curves.png",
    )
    plot.add_argument(
        "run", metavar="RUN", help="output directory, metrics JSONL or TensorBoard dir"
    )
    plot.add_argument("-o", "--output", metavar="PNG",
                      help="where to write (default: RUN/curves.png for a directory, "
                      "RUN's name with -curves.png for a file)")  # fmt: skip

    models = commands.add_parser("models", help="list the GPU models and their aliases")
    models.add_argument("--json", action="store_true")
    return parser


# ----------------------------------------------------------------- commands
def cmd_daemon(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "start": _daemon_start,
        "run": _daemon_run,
        "stop": _daemon_stop,
        "status": _daemon_status,
    }
    return handlers[args.action](args)


def _daemon_run(args: argparse.Namespace) -> int:
    from fakehw.service.daemon import (
        AlreadyRunning,
        Daemon,
        DaemonFailed,
        StartFailed,
    )
    from fakehw.service.logs import configure_logging

    cluster, settings, _ = _cluster_from(args)
    paths = runtime_paths(getattr(args, "runtime_dir", None), create=True)
    os.umask(0o077)  # whatever the daemon writes is the user's alone
    ready_fd = None
    if getattr(args, "detach", False):
        ready_fd = _detach()
        if ready_fd is None:
            return EXIT_OK  # unreachable: the launcher exits inside _detach
    try:
        configure_logging(paths, foreground=ready_fd is None)
    except OSError as exc:
        message = f"cannot write {paths.log_file}: {exc.strerror}"
        if ready_fd is not None:
            os.write(ready_fd, f"error: {message}".encode())
        raise CliError(message) from None
    try:
        Daemon(paths, cluster, settings, ready_fd=ready_fd).serve_forever()
    except (AlreadyRunning, StartFailed, DaemonFailed) as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def _detach() -> int | None:
    """Become a daemon: fork twice so no client is left with a zombie to reap.

    The launcher waits until the daemon writes "ready" (its socket listens) or
    an error to a pipe, and exits 0 or 1 with that message: whoever started
    it learns the outcome without polling.
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        message = b"".join(chunks).decode(errors="replace").strip()
        if message == "ready":
            os._exit(EXIT_OK)
        print(
            f"fakehw: {message.removeprefix('error: ') or 'the daemon died while starting'}",
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(EXIT_FAILURE)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(EXIT_OK)
    devnull = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(devnull, stream)
    os.close(devnull)
    return write_fd


def _daemon_start(args: argparse.Namespace) -> int:
    from fakehw.service.client import Client, DaemonUnavailable, start_daemon, try_connect
    from fakehw.service.runtime import TokenError, read_token_file

    cluster, settings, explicit = _cluster_from(args)
    if args.tcp_token_file is not None:
        if not settings.tcp_listen:
            raise CliError(
                "--tcp-token-file needs --tcp (or tcp_listen in the config file): without a "
                "TCP listener there is no token to present",
                EXIT_USAGE,
            )
        try:
            read_token_file(settings.tcp_token_file)
        except TokenError as exc:
            raise CliError(f"--tcp-token-file: {exc}", EXIT_USAGE) from None
    if args.foreground:
        return _daemon_run(args)
    paths = runtime_paths(create=True)
    existing = try_connect(paths)
    if existing is not None:
        existing.close()
        try:
            with Client.connect(client_name="fakehw daemon start", autostart=False) as client:
                running = ClusterConfig.from_json(client.hello["cluster"])
                status = client.request("status")
        except DaemonUnavailable as exc:
            raise CliError(str(exc)) from None
        if explicit and running != cluster:
            raise CliError(
                f"a daemon already runs with {running.describe()} (seed {running.seed}); "
                "stop it first with `fakehw daemon stop`"
            )
        differences = _settings_differences(args, settings, status)
        if differences:
            raise CliError(
                f"a daemon already runs with {'; '.join(differences)}; "
                "stop it first with `fakehw daemon stop`"
            )
        print(f"fakehw daemon already running: {running.describe()} ({paths.socket})")
        return EXIT_OK
    try:
        start_daemon(paths, cluster, settings).close()
    except DaemonUnavailable as exc:
        raise CliError(str(exc)) from None
    print(f"fakehw daemon started: {cluster.describe()} ({paths.socket})")
    if settings.tcp_listen:
        with Client.connect(client_name="fakehw daemon start", autostart=False) as client:
            status = client.request("status")
        print(f"serving views on tcp {status['tcp']}; token in {status['tcp_token_file']}")
    return EXIT_OK


def _settings_differences(
    args: argparse.Namespace, settings: DaemonConfig, status: dict[str, Any]
) -> list[str]:
    """The daemon settings given as flags that the running daemon does not have."""
    found = []
    if args.idle_timeout is not None and settings.idle_timeout_s != status["idle_timeout_s"]:
        found.append(f"--idle-timeout {status['idle_timeout_s']:g} (asked {args.idle_timeout:g})")
    if args.tick_hz is not None and settings.tick_hz != status["tick_hz"]:
        found.append(f"--tick-hz {status['tick_hz']:g} (asked {args.tick_hz:g})")
    if args.tcp is not None:
        running = status.get("tcp")
        asked_host, asked_port = parse_tcp_address(args.tcp)
        if running is None:
            found.append("no TCP listener")
        else:
            host, port = parse_tcp_address(running)
            if host != asked_host or (asked_port and port != asked_port):
                found.append(f"--tcp {running} (asked {args.tcp})")
    if (
        args.tcp_token_file is not None
        and status.get("tcp_token_file")
        and os.path.realpath(status["tcp_token_file"]) != os.path.realpath(settings.tcp_token_file)
    ):
        found.append(f"--tcp-token-file {status['tcp_token_file']}")
    return found


def _daemon_stop(args: argparse.Namespace) -> int:
    from fakehw.service.client import Client, DaemonBroken, DaemonNotAnswering, DaemonUnavailable

    try:
        client = Client.connect(client_name="fakehw daemon stop", autostart=False,
                                timeout=STATUS_TIMEOUT_S)  # fmt: skip
    except DaemonNotAnswering as exc:
        raise CliError(f"{exc}: it cannot stop until it runs again") from None
    except DaemonBroken as exc:
        raise CliError(f"{exc}: it cannot be asked to stop (SIGTERM stops it)") from None
    except DaemonUnavailable:
        print("no fakehw daemon is running")
        return EXIT_OK
    with client:
        pid = client.request("shutdown")["daemon_pid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(client.paths.socket):
        time.sleep(0.05)
    if os.path.exists(client.paths.socket):
        raise CliError(f"the daemon (pid {pid}) did not stop within 10 s")
    print(f"fakehw daemon stopped (pid {pid})")
    return EXIT_OK


def _daemon_status(args: argparse.Namespace) -> int:
    from fakehw.service.client import Client, DaemonBroken, DaemonNotAnswering, DaemonUnavailable

    try:
        client = Client.connect(client_name="fakehw daemon status", autostart=False,
                                timeout=STATUS_TIMEOUT_S)  # fmt: skip
    except (DaemonNotAnswering, DaemonBroken) as exc:
        if args.json:
            print(json.dumps({"running": True, "answering": False, "reason": str(exc)}))
        else:
            print(f"fakehw daemon: not answering ({exc})")
        return EXIT_NOT_ANSWERING
    except DaemonUnavailable as exc:
        if args.json:
            print(json.dumps({"running": False, "reason": str(exc)}))
        else:
            print(f"fakehw daemon: not running ({exc})")
        return EXIT_NOT_RUNNING
    with client:
        status = client.request("status")
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
        return EXIT_OK
    lines = [
        f"fakehw daemon: running (pid {status['daemon_pid']}, fakehw {status['version']})",
        f"  cluster:   {status['description']}, seed {status['cluster']['seed']}",
        f"  socket:    {status['socket']}",
        f"  uptime:    {status['uptime_s']:.0f} s, {status['ticks']} ticks at "
        f"{status['tick_hz']:g} Hz, {status['step_cpu_ms_mean']:.3f} ms CPU per step",
        f"  clients:   {status['clients']} connected, {status['subscriptions']} subscriptions",
        f"  processes: {status.get('process_count', len(status['processes']))} attached",
    ]
    if status.get("tcp"):
        tcp_clients = status.get("tcp_clients", 0)
        lines.insert(
            3,
            f"  tcp:       {status['tcp']} ({tcp_clients} clients; "
            f"token in {status['tcp_token_file']})",
        )
    for process in status["processes"][:20]:
        lines.append(
            f"    pid {process['pid']:>7}  {process['phase']:<10} GPUs "
            f"{','.join(map(str, process['gpus']))}  {process['name']}"
        )
    count = status.get("process_count", len(status["processes"]))
    if count > 20:
        lines.append(f"    ... and {count - 20} more")
    print("\n".join(lines))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from fakehw.smi.fields import (
        FieldContext,
        UnknownField,
        csv_header,
        csv_row,
        resolve,
        split_field_list,
    )
    from fakehw.tools.simulate import DEFAULT_QUERY, SimulationRequest, check_request, samples
    from fakehw.workload import Schedule, ScheduleError, check_start_time

    options = {part.strip() for part in args.format.split(",") if part.strip()}
    if not options or not options <= {"csv", "noheader", "nounits"} or "csv" not in options:
        raise CliError(
            f'"{args.format}" is not a valid format: use csv[,noheader][,nounits]', EXIT_USAGE
        )
    if not 1 <= args.gpus <= 16:
        raise CliError("--gpus must be between 1 and 16 (one node)", EXIT_USAGE)
    if not 1 <= args.interval_ms <= 3_600_000:
        raise CliError("--interval-ms must be between 1 and 3600000", EXIT_USAGE)
    try:
        fields = resolve(split_field_list(args.query_gpu or DEFAULT_QUERY))
    except UnknownField as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not fields:
        raise CliError("--query-gpu lists no fields", EXIT_USAGE)
    try:
        schedule = Schedule.from_file(args.schedule)
        if args.start is not None:
            check_start_time(args.start, schedule.duration_s, "--start")
    except ScheduleError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    gpu_model = args.gpu_model or load_settings()[0].gpu_model  # a bad file: exit 1
    try:
        config = ClusterConfig(
            gpu_model=gpu_model,
            nodes=1,
            gpus_per_node=args.gpus,
            seed=args.seed,
        ).validated()
    except ConfigError as exc:
        raise CliError(_flag_message(str(exc)), EXIT_USAGE) from None
    request = SimulationRequest(schedule, config, args.interval_ms, args.start)
    try:
        check_request(request)
    except ScheduleError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    units = "nounits" not in options
    out = sys.stdout
    if "noheader" not in options:
        out.write(csv_header(fields) + "\n")
    for snap in samples(request):
        node = snap["nodes"][0]
        rows = [csv_row(fields, FieldContext.of(snap, node, gpu), units) for gpu in node["gpus"]]
        out.write("\n".join(rows) + "\n")
    out.flush()
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    if args.json:
        from fakehw.specs import model_record

        print(
            json.dumps([{"aliases": list(s.aliases), **model_record(s)} for s in CATALOG], indent=2)
        )
        return EXIT_OK
    from tabulate import tabulate

    rows = [
        (
            spec.key,
            spec.name,
            f"{spec.memory_total_mib} MiB",
            f"{spec.power_default_w:.0f} W",
            f"{spec.sm_clock_max_mhz} MHz",
            f"NV{spec.nvlink_count}" if spec.nvlink_topology == "all" else "PCIe",
            ", ".join(spec.aliases),
        )
        for spec in CATALOG
    ]
    headers = ("key", "nvidia-smi name", "memory", "power cap", "max SM clock", "links", "aliases")
    print(tabulate(rows, headers=headers))
    return EXIT_OK


def cmd_exec(args: argparse.Namespace) -> int:
    from fakehw.tools.shims import run_with_fakes

    return run_with_fakes(args.argv)


def cmd_shellenv(args: argparse.Namespace) -> int:
    from fakehw.tools.shims import print_shellenv

    return print_shellenv()


def cmd_inject(args: argparse.Namespace) -> int:
    from fakehw.service.client import (
        Client,
        DaemonUnavailable,
        RequestFailed,
        node_from_env,
        parse_node,
    )
    from fakehw.service.protocol import MAX_ECC_COUNT, RANK_CRASH

    if not 1 <= args.count <= MAX_ECC_COUNT:
        raise CliError(f"--count must be between 1 and {MAX_ECC_COUNT}", EXIT_USAGE)
    node = node_from_env() if args.node is None else parse_node(args.node)
    where = f"GPU {args.gpu}"
    try:
        with Client.connect(client_name="fakehw inject", autostart=False) as client:
            snapshot = client.snapshot(node)
            record = snapshot["nodes"][0]
            gpus = record["gpus"]
            if not 0 <= args.gpu < len(gpus):
                raise CliError(f"GPU {args.gpu} does not exist on {record['hostname']} "
                               f"(0-{len(gpus) - 1})", EXIT_USAGE)  # fmt: skip
            gpu = gpus[args.gpu]
            where = f"GPU {args.gpu} of {record['hostname']} ({gpu['bus_id']})"
            result = client.request("inject", gpu=gpu["global_index"], fault=args.fault,
                                    count=args.count)  # fmt: skip
    except DaemonUnavailable:
        raise CliError("no fakehw daemon is running (start one: fakehw daemon start)") from None
    except RequestFailed as exc:
        if exc.code == "not_found" and args.fault == RANK_CRASH:
            raise CliError(f"no process runs on {where}") from None
        usage = exc.code in ("bad_request", "not_found")  # a bad fault or GPU; else refused
        raise CliError(exc.message, EXIT_USAGE if usage else EXIT_FAILURE) from None
    if args.fault == RANK_CRASH:
        parts = []
        if result["killed"]:
            parts.append(f"killed {', '.join(map(str, result['killed']))}")
        if result["ended"]:
            parts.append(
                f"ended {', '.join(map(str, result['ended']))} (not processes of this machine: "
                "their records were detached, nothing was signalled)"
            )
        print(f"{where}: {'; '.join(parts)}")
        return EXIT_OK
    print(f"{where}: {args.fault} injected; in force: {', '.join(result['faults']) or 'none'}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fakehw.tools.plot import PlotError, plot

    run = Path(args.run)
    if args.output:
        output = Path(args.output)
    elif run.is_dir():
        output = run / "curves.png"
    else:
        output = run.with_name(run.stem + "-curves.png")
    try:
        plot(run, output)
    except PlotError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    print(output)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from fakehw.tools.demo import DemoError, run

    try:
        return run(args)
    except DemoError as exc:
        raise CliError(str(exc), exc.code) from None


def _print_file_sd(listen: str) -> int:
    """``exporter --print-file-sd``: the targets of an exporter listening at ``listen``."""
    from fakehw.tools.exporter import DcgmCollector, advertised_address, service_discovery

    try:
        address = advertised_address(listen)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    collector = DcgmCollector()
    try:
        print(json.dumps(service_discovery(collector.hostnames(), address), indent=1))
    finally:
        collector.close()
    return EXIT_OK


def cmd_exporter(args: argparse.Namespace) -> int:
    from fakehw.dcgm import counters
    from fakehw.tools.exporter import serve

    if args.print_file_sd:
        return _print_file_sd(args.listen)
    try:
        chosen = counters.load(args.collectors)
        server = serve(args.listen, args.host_label, chosen)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {exc.strerror}", EXIT_FAILURE) from None
    try:  # as dcgm-exporter fails at start without DCGM; warns if too large for one scrape
        server.app.start()
    except BaseException:
        server.server_close()
        raise
    print(f"fakehw exporter: {server.url}", flush=True)
    raise_on_termination()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "daemon": cmd_daemon,
    "simulate": cmd_simulate,
    "exec": cmd_exec,
    "shellenv": cmd_shellenv,
    "models": cmd_models,
    "exporter": cmd_exporter,
    "demo": cmd_demo,
    "inject": cmd_inject,
    "plot": cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"fakehw: {exc}", file=sys.stderr)
        return exc.code
    except (ConfigError, RuntimeDirError) as exc:
        print(f"fakehw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (RequestFailed, DaemonUnavailable) as exc:
        print(f"fakehw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (`| head`): quietly stop, as coreutils do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated as exc:
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
