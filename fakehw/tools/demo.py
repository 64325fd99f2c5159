"""``fakehw demo``: a tmux session with fake-train and the viewers, ready to record.

A layout is plain data: panes, each a command and where it splits from. Every
pane runs on one shared fake cluster (the daemon is started, or adopted,
before any pane starts, as fake-train does). ``--print-tmuxp`` writes the same
layout as a tmuxp YAML file for people who keep their own.

A demo has a name (``--session``): the tmux session it opens or, run inside
tmux, the demo's window in the current session. tmux options on that window
(and on the session it opened) record the demo's name and its cluster, so
``--kill`` ends exactly what the demo opened, from any shell, and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fakehw.programs.argtypes import float_option, int_option
from fakehw.programs.signals import ignore_termination, raise_on_termination

INSTALL_HINT = (
    "fakehw demo needs tmux. Install it with your package manager, for example:\n"
    "  sudo apt-get install tmux      (Debian, Ubuntu)\n"
    "  sudo dnf install tmux          (Fedora, RHEL)\n"
    "  brew install tmux              (macOS)"
)
DEFAULT_SESSION = "fakehw"
# tmux turns ':' and '.' into '_', expands '#' as a format, escapes '\\', '$' and control
# characters, and shows non-ASCII as the locale lets it; a leading '-' reads as an option.
# A name is kept to what tmux, a shell and argparse all take as it is.
SESSION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
SESSION_NAME_MAX = 100
SESSION_NAME_RULE = (
    f"1 to {SESSION_NAME_MAX} ASCII letters, digits, '_' and '-', not starting with '-'"
)
DETACHED_SIZE = (200, 50)  # columns, rows of a session started with --detach
# tmux user options marking what a demo opened: its name on its window, and on the
# session when it opened one; the runtime dir of its cluster on its window
WINDOW_TAG = "@fakehw_demo"
SESSION_TAG = "@fakehw_demo_session"
RUNTIME_TAG = "@fakehw_demo_runtime"
STOP_TIMEOUT_S = 10.0  # how long the demo's programs get to exit before they are killed


@dataclass(frozen=True)
class Pane:
    tool: str  # "train", "smi", "nvitop", "gpustat"
    args: tuple[str, ...] = ()
    split: str = ""  # "" for the first pane; "h" beside, "v" below
    of: int = 0  # which pane it splits
    size: int = 50  # percent of that pane it takes
    columns: int = 0  # beside (h): at least this many columns, what the tool's output needs


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    panes: tuple[Pane, ...]


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("classic", "fake-train beside fake-nvidia-smi -l 1",
               (Pane("train"), Pane("smi", ("-l", "1"), "h", 0, 45, columns=92))),
        Layout("nvitop", "fake-train beside the live fake-nvitop",
               (Pane("train"), Pane("nvitop", (), "h", 0, 55, columns=100))),
        Layout("cluster", "fake-train, the cluster grid, and nvidia-smi of the first node",
               (Pane("train"), Pane("nvitop", ("--cluster",), "h", 0, 50, columns=80),
                Pane("smi", ("-l", "1"), "v", 0, 55))),
        Layout("ops", "what an operator keeps open: dmon, pmon, gpustat watch, the job's log",
               (Pane("train"), Pane("smi", ("dmon", "-s", "pu"), "v", 0, 60),
                Pane("gpustat", ("-i", "1", "-cp"), "h", 0, 50),
                Pane("smi", ("pmon", "-s", "um"), "h", 1, 50))),
    )
}  # fmt: skip

MODULES = {"train": "fakehw.train", "smi": "fakehw.smi", "nvitop": "fakehw.nvitop",
           "gpustat": "fakehw.gpustat", "tensorboard": "tensorboard.main"}  # fmt: skip
SCRIPTS = {"train": "fake-train", "smi": "fake-nvidia-smi", "nvitop": "fake-nvitop",
           "gpustat": "fake-gpustat", "tensorboard": "tensorboard"}  # fmt: skip
DEFAULT_TENSORBOARD_PORT = 6006
DEMO_OUTPUT = "demo-run"  # --tensorboard's output directory, in the demo cluster's runtime dir
TENSORBOARD_HINT = (
    "--tensorboard needs the tensorboard package (pip install tensorboard); without it, "
    "run the demo with --output-dir DIR and open TensorBoard where it is installed: "
    "tensorboard --logdir DIR"
)


class DemoError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def session_name(text: str) -> str:
    """A ``--session`` value: a name tmux keeps exactly as given, so that every
    command printed with it (attach, ``--kill``) finds what was opened."""
    if len(text) <= SESSION_NAME_MAX and SESSION_NAME.fullmatch(text):
        return text
    shown = f"a name of {len(text)} characters" if len(text) > SESSION_NAME_MAX else repr(text)
    raise argparse.ArgumentTypeError(
        f"{shown} cannot be a tmux session name: use {SESSION_NAME_RULE}"
    )


def kill_command(name: str) -> str:
    return shlex.join(["fakehw", "demo", "--kill", "--session", name])


def train_args(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("seed", "gpus", "nodes", "gpu_model", "speed_factor", "style", "model", "task",
                 "output_dir"):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def check_train_arguments(args: argparse.Namespace) -> None:
    """What fake-train would refuse (its flags' values, an unknown GPU model) is a usage
    error here, before a pane (or a tmuxp file) runs it."""
    from fakehw.specs import UnknownGpuModel, lookup
    from fakehw.train.cli import UsageError, check_arguments

    try:
        check_arguments(train_args(args))
        if args.gpu_model is not None:
            lookup(args.gpu_model)
    except (UsageError, UnknownGpuModel) as exc:
        raise DemoError(str(exc), 2) from None


def require_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise DemoError(TENSORBOARD_HINT, 2)


def with_tensorboard(layout: Layout, args: argparse.Namespace) -> Layout:
    """The layout with TensorBoard on the run's output directory, in a pane below the
    log (its address is printed once the demo is open)."""
    if not getattr(args, "tensorboard", False):
        return layout
    require_tensorboard()
    board = Pane("tensorboard", ("--logdir", args.output_dir, "--host", "127.0.0.1", "--port",
                                 str(args.tensorboard_port)), "v", 0, 25)  # fmt: skip
    return Layout(layout.name, layout.description, (*layout.panes, board))


def pane_command(pane: Pane, args: argparse.Namespace, runtime: str, portable: bool) -> str:
    """The shell command of a pane. ``portable``: script names (for tmuxp files)
    instead of this interpreter's ``-m`` modules."""
    extra = list(pane.args) + (train_args(args) if pane.tool == "train" else [])
    program = [SCRIPTS[pane.tool]] if portable else [sys.executable, "-m", MODULES[pane.tool]]
    command = shlex.join(program + extra)
    if portable:
        return command
    return f"FAKEHW_RUNTIME_DIR={shlex.quote(runtime)} {command}"


# ------------------------------------------------------------------ tmux
def tmux(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["tmux", *args], capture_output=True, text=True,
                                errors="replace", check=False)  # fmt: skip
    except FileNotFoundError:
        raise DemoError(INSTALL_HINT) from None
    if check and result.returncode != 0:
        detail = "; ".join(result.stderr.strip().splitlines())
        raise DemoError(f"tmux {args[0]} failed: {detail}")
    return result


def tmux_rows(fields: int, *args: str) -> list[list[str]]:
    """The tab-separated lines tmux prints (the last field may hold tabs); none when
    no tmux server runs."""
    result = tmux(*args, check=False)
    if result.returncode != 0:
        return []
    rows = (line.split("\t", fields - 1) for line in result.stdout.splitlines())
    return [row for row in rows if len(row) == fields]


def tmux_literal(text: str) -> str:
    """An argument as tmux reads it: a final ';' would end the command there."""
    return text[:-1] + "\\;" if text.endswith(";") else text


def session_exists(name: str) -> bool:
    return tmux("has-session", "-t", f"={name}", check=False).returncode == 0


@dataclass(frozen=True)
class Opened:
    """What the demo of one name has open in tmux."""

    sessions: tuple[str, ...]  # the session it opened (none when it opened a window in tmux)
    windows: tuple[str, ...]  # the ids of its windows
    runtime: str | None  # the runtime dir of its cluster (None: this environment's)


def find_demo(name: str) -> Opened:
    sessions = tmux_rows(2, "list-sessions", "-F", f"#{{{SESSION_TAG}}}\t#{{session_name}}")
    windows = tmux_rows(3, "list-windows", "-a", "-F",
                        f"#{{{WINDOW_TAG}}}\t#{{window_id}}\t#{{{RUNTIME_TAG}}}")  # fmt: skip
    mine = [row for row in windows if row[0] == name]
    return Opened(
        sessions=tuple(session for tag, session in sessions if tag == name),
        windows=tuple(window for _, window, _ in mine),
        runtime=next((runtime for *_, runtime in mine if runtime), None),
    )


# ------------------------------------------------------------------ start
@dataclass(frozen=True)
class Started:
    window: str  # the id of the demo's window
    session: str  # the tmux session that window is in
    inside: bool  # a window of the session this was run from, not a session of its own


def prepare_cluster(args: argparse.Namespace) -> str:
    """Start (or adopt) the daemon every pane will share; returns its runtime dir."""
    from fakehw.service.runtime import runtime_paths
    from fakehw.train.cli import UsageError, connect

    check_train_arguments(args)  # refused here, not in a pane
    notices: list[str] = []
    try:
        client = connect(args, notices.append)[0]
    except UsageError as exc:
        raise DemoError(str(exc), 2) from None
    except RuntimeError as exc:
        raise DemoError(str(exc)) from None
    for notice in notices:
        print(f"fakehw demo: {notice}", file=sys.stderr)
    client.close()
    return runtime_paths(create=True).root


def refuse_taken_name(name: str, inside: bool) -> None:
    """One demo per name; a session of that name the demo did not open is not touched."""
    opened = find_demo(name)
    if opened.sessions:
        raise DemoError(
            f"a fakehw demo named {name!r} exists; attach to it (tmux attach -t {name}), "
            f"end it ({kill_command(name)}) or choose another --session"
        )
    if opened.windows:
        raise DemoError(
            f"a fakehw demo named {name!r} exists (tmux window {opened.windows[0]}); "
            f"end it ({kill_command(name)}) or choose another --session"
        )
    if not inside and session_exists(name):
        raise DemoError(
            f"a tmux session named {name!r} exists (fakehw demo did not open it); "
            "choose another --session"
        )


def start(args: argparse.Namespace, layout: Layout) -> Started:
    if shutil.which("tmux") is None:
        raise DemoError(INSTALL_HINT)
    inside = bool(os.environ.get("TMUX")) and not args.detach
    refuse_taken_name(args.session, inside)
    raise_on_termination()  # a closed terminal, like Ctrl-C, unwinds through the clean-up
    runtime = prepare_cluster(args)
    if args.tensorboard and args.output_dir is None:
        args.output_dir = os.path.join(runtime, DEMO_OUTPUT)
    layout = with_tensorboard(layout, args)
    try:
        started = open_layout(args, layout, runtime, inside)
    except BaseException:
        ignore_termination()  # a second Ctrl-C must not leave half a demo running
        end(find_demo(args.session), runtime)
        raise
    if not inside and not args.detach and can_attach():
        os.execvp("tmux", ["tmux", "attach-session", "-t", f"={args.session}"])
    return started


def can_attach() -> bool:
    """Whether tmux can attach here: it reads keys from stdin and draws on stdout."""
    return sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()


def open_layout(args: argparse.Namespace, layout: Layout, runtime: str, inside: bool) -> Started:
    commands = [pane_command(p, args, runtime, portable=False) for p in layout.panes]
    # The window is marked in the same tmux command that opens it: whatever interrupts
    # the rest, the clean-up (and --kill) finds everything that was opened.
    marks = [";", "set-option", "-w", WINDOW_TAG, args.session,
             ";", "set-option", "-w", RUNTIME_TAG, tmux_literal(runtime),
             # a pane whose program ends keeps its last screen (nothing vanishes mid-recording)
             ";", "set-option", "-w", "remain-on-exit", "on"]  # fmt: skip
    printed = ("-P", "-F", "#{pane_id}\t#{window_id}\t#{session_name}")
    window_name = f"fakehw-{layout.name}"
    if inside:
        created = tmux("new-window", *printed, "-n", window_name, commands[0], *marks)
    else:
        columns, rows = shutil.get_terminal_size(DETACHED_SIZE)
        if args.detach or not can_attach():
            columns, rows = DETACHED_SIZE
        created = tmux("new-session", "-d", *printed, "-s", args.session, "-n", window_name,
                       "-x", str(columns), "-y", str(rows), commands[0],
                       ";", "set-option", SESSION_TAG, args.session, *marks)  # fmt: skip
    first, window, session = created.stdout.rstrip("\n").split("\t", 2)
    pane_ids = [first]
    for pane, command in zip(layout.panes[1:], commands[1:], strict=True):
        size = f"{pane.size}%"
        if pane.split == "h" and pane.columns:
            # wide enough for the tool (nvidia-smi's table is 89 columns), leaving the
            # log at least 60: the layout fits the terminal it opens in
            width = int(tmux("display-message", "-p", "-t", pane_ids[pane.of],
                             "#{pane_width}").stdout)  # fmt: skip
            size = str(max(min(pane.columns, width - 61), width * pane.size // 100))
        split = tmux("split-window", "-P", "-F", "#{pane_id}", f"-{pane.split}", "-l", size,
                     "-t", pane_ids[pane.of], command, check=False)  # fmt: skip
        if split.returncode != 0:
            raise DemoError(split_failure(layout, window, split.stderr))
        pane_ids.append(split.stdout.strip())
    tmux("select-pane", "-t", pane_ids[0])
    return Started(window, session, inside)


def split_failure(layout: Layout, window: str, stderr: str) -> str:
    if "no space" not in stderr:
        return f"tmux split-window failed: {stderr.strip()}"
    size = tmux("display-message", "-p", "-t", window, "#{window_width}x#{window_height}",
                check=False).stdout.strip()  # fmt: skip
    return (
        f"the {layout.name} layout does not fit a {size} terminal: make it larger, or "
        f"start the demo with --detach (it opens at {DETACHED_SIZE[0]}x{DETACHED_SIZE[1]})"
    )


# ------------------------------------------------------------------ end
def kill(name: str) -> str:
    """End the demo named ``name``: its session or window, its programs, and the daemon
    if nothing else uses it; returns what was ended."""
    if shutil.which("tmux") is None:
        raise DemoError(INSTALL_HINT)
    opened = find_demo(name)
    if not opened.windows and not opened.sessions:
        if session_exists(name):
            raise DemoError(
                f"the tmux session {name!r} was not opened by fakehw demo: left alone "
                f"(end it yourself with `tmux kill-session -t {name}`)"
            )
        raise DemoError(f"no tmux session named {name!r}, nor a window of a demo of that name")
    ignore_termination()  # once started, the clean-up is not cut short
    end(opened, opened.runtime)
    if opened.sessions:
        return f"session {name!r} ended"
    return f"demo {name!r} ended (tmux window {', '.join(opened.windows)})"


def end(opened: Opened, runtime: str | None) -> None:
    """Close what a demo opened. Its programs (fake-train and its ranks, the viewers) get
    STOP_TIMEOUT_S to leave their GPUs and exit, then they are killed; then the daemon
    stops unless others use it."""
    import psutil

    programs = _programs(opened.windows)
    for window in opened.windows:
        tmux("kill-window", "-t", window, check=False)  # SIGHUP to each pane's programs
    _, survivors = psutil.wait_procs(programs, timeout=STOP_TIMEOUT_S)
    for process in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _stop_idle_daemon(runtime, {process.pid for process in programs})
    for session in opened.sessions:  # and any window opened in it since
        tmux("kill-session", "-t", f"={session}", check=False)


def _programs(windows: Sequence[str]) -> list[Any]:
    """The processes of the windows' panes and all their descendants (fake-train's ranks)."""
    import psutil

    found = []
    for window in windows:
        panes = tmux_rows(2, "list-panes", "-t", window, "-F", "#{pane_dead}\t#{pane_pid}")
        for dead, pid in panes:
            if dead == "1":  # its program ended: that pid may be another program's by now
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(int(pid))
                found += [process, *process.children(recursive=True)]
    return found


def _stop_idle_daemon(runtime: str | None, programs: set[int]) -> None:
    """Once the demo's processes have left the daemon, stop it if nobody else uses it."""
    from fakehw.service.client import Client, DaemonUnavailable, RequestFailed

    deadline = time.monotonic() + STOP_TIMEOUT_S
    while True:
        try:
            with Client.connect(client_name="fakehw demo", autostart=False,
                                root=runtime) as client:  # fmt: skip
                status = client.request("status")
                attached = status["processes"]
                ours = any(p["pid"] in programs or p["watch_pid"] in programs for p in attached)
                if not ours and attached:
                    break  # other programs train on it
                if not ours and status["clients"] <= 1:
                    client.request("shutdown")
                    return
        except (DaemonUnavailable, RequestFailed):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)  # ranks still detaching, viewers still closing
    print("fakehw demo: the daemon is still in use by others; left running", file=sys.stderr)


# ------------------------------------------------------------------ tmuxp
def yaml_string(text: str) -> str:
    """``text`` as a double-quoted YAML scalar in printable ASCII: any string (quotes,
    '#', ': ', line breaks, non-ASCII, lone surrogates) reads back exactly."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def tmuxp_yaml(args: argparse.Namespace, layout: Layout) -> str:
    """The layout as a tmuxp session file (the daemon is started by the first tool)."""
    tmux_layout = {"classic": "even-horizontal", "nvitop": "even-horizontal",
                   "cluster": "main-vertical", "ops": "tiled"}[layout.name]  # fmt: skip
    lines = [
        f"session_name: {yaml_string(args.session)}",
        "windows:",
        f"  - window_name: {yaml_string(f'fakehw-{layout.name}')}",
        f"    layout: {yaml_string(tmux_layout)}",
        "    options:",
        f"      remain-on-exit: {yaml_string('on')}",
        "    panes:",
    ]
    for pane in layout.panes:
        command = pane_command(pane, args, "", portable=True)
        lines += ["      - shell_command:", f"          - {yaml_string(command)}"]
    return "\n".join(lines) + "\n"


def list_layouts() -> str:
    width = max(len(name) for name in LAYOUTS)
    return "\n".join(f"{name:<{width}}  {layout.description}" for name, layout in LAYOUTS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "layout",
        nargs="?",
        default="classic",
        metavar="LAYOUT",
        help=f"one of: {', '.join(LAYOUTS)} (default classic)",
    )
    parser.add_argument("--list", action="store_true", help="list the layouts and exit")
    parser.add_argument(
        "--session",
        type=session_name,
        default=DEFAULT_SESSION,
        metavar="NAME",
        help=f"the demo's name: the tmux session it opens (run inside tmux, the name its "
        f"window goes by for --kill); {SESSION_NAME_RULE} (default {DEFAULT_SESSION})",
    )
    parser.add_argument(
        "--detach", action="store_true", help="start the session without attaching to it"
    )
    parser.add_argument(
        "--kill",
        action="store_true",
        help="end the demo named by --session: its session or window and everything it started",
    )
    parser.add_argument(
        "--print-tmuxp", action="store_true", help="print the layout as a tmuxp YAML file and exit"
    )
    parser.add_argument("--seed", type=int_option, help="fake-train's seed (same seed, same run)")
    parser.add_argument("--gpus", type=int_option, metavar="N", help="total GPUs (as fake-train)")
    parser.add_argument("--nodes", type=int_option, metavar="N", help="nodes (as fake-train)")
    parser.add_argument("--gpu-model", metavar="MODEL", help="GPU model (as fake-train)")
    parser.add_argument(
        "--speed-factor", type=float_option, metavar="X", help="play the run X times faster"
    )
    parser.add_argument("--style", help="fake-train's log style")
    parser.add_argument("--model", help="fake-train's model")
    parser.add_argument("--task", help="fake-train's task")  # fmt: skip
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="fake-train --output-dir: the run really writes TensorBoard files, logs and "
        "checkpoints there",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also open TensorBoard on the run, in a pane below the log (needs the "
        "tensorboard package; the run writes to --output-dir, or to the demo cluster's "
        "runtime directory)",
    )
    parser.add_argument(
        "--tensorboard-port",
        type=int_option,
        default=DEFAULT_TENSORBOARD_PORT,
        metavar="PORT",
        help=f"TensorBoard's port on 127.0.0.1 (default {DEFAULT_TENSORBOARD_PORT})",
    )


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_layouts())
        return 0
    layout = LAYOUTS.get(args.layout)
    if layout is None:
        raise DemoError(
            f"unknown layout {args.layout!r}; layouts: {', '.join(LAYOUTS)} (fakehw demo --list)",
            2,
        )
    if args.print_tmuxp:
        check_train_arguments(args)  # the file must not start a fake-train that refuses them
        if args.tensorboard and args.output_dir is None:
            raise DemoError("--print-tmuxp --tensorboard needs --output-dir DIR", 2)
        print(tmuxp_yaml(args, with_tensorboard(layout, args)), end="")
        return 0
    if args.tensorboard:
        require_tensorboard()  # refused before anything opens
    if not 1 <= args.tensorboard_port <= 65535:
        raise DemoError(f"--tensorboard-port {args.tensorboard_port}: not a TCP port", 2)
    if args.output_dir is not None:
        args.output_dir = os.path.abspath(args.output_dir)  # the panes start elsewhere
    if args.kill:
        print(f"fakehw demo: {kill(args.session)}")
        return 0
    started = start(args, layout)
    end_it = f"end with `{kill_command(args.session)}`"
    if started.inside:
        print(f"fakehw demo: {layout.name} running in window {started.window} of tmux session "
              f"{started.session!r}; {end_it}")  # fmt: skip
    else:
        print(f"fakehw demo: {layout.name} running in tmux session {args.session!r} "
              f"({started.window}); attach with `tmux attach -t {shlex.quote(args.session)}`, "
              f"{end_it}")  # fmt: skip
    if args.output_dir:
        print(f"fakehw demo: the run writes to {args.output_dir}; afterwards: "
              f"fakehw plot {shlex.quote(args.output_dir)}")  # fmt: skip
    if args.tensorboard:
        print(f"fakehw demo: TensorBoard on http://127.0.0.1:{args.tensorboard_port}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fakehw demo")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DemoError as exc:
        print(f"fakehw demo: {exc}", file=sys.stderr)
        return exc.code
