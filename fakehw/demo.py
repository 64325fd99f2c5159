"""``fakehw demo``: a tmux session with fake-train and the viewers, ready to record.

A layout is plain data: panes, each a command and where it splits from. Every
pane runs on one shared fake cluster (the daemon is started, or adopted,
before any pane starts, as fake-train does). ``--print-tmuxp`` writes the same
layout as a tmuxp YAML file for people who keep their own.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

INSTALL_HINT = (
    "fakehw demo needs tmux. Install it with your package manager, for example:\n"
    "  sudo apt-get install tmux      (Debian, Ubuntu)\n"
    "  sudo dnf install tmux          (Fedora, RHEL)\n"
    "  brew install tmux              (macOS)"
)
DEFAULT_SESSION = "fakehw"
DETACHED_SIZE = (200, 50)  # columns, rows of a session started with --detach


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
           "gpustat": "fakehw.gpustat"}  # fmt: skip
SCRIPTS = {"train": "fake-train", "smi": "fake-nvidia-smi", "nvitop": "fake-nvitop",
           "gpustat": "fake-gpustat"}  # fmt: skip


class DemoError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def train_args(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("seed", "gpus", "nodes", "gpu_model", "speed_factor", "style", "model", "task"):
        value = getattr(args, flag, None)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def pane_command(pane: Pane, args: argparse.Namespace, runtime: str, portable: bool) -> str:
    """The shell command of a pane. ``portable``: script names (for tmuxp files)
    instead of this interpreter's ``-m`` modules."""
    extra = list(pane.args) + (train_args(args) if pane.tool == "train" else [])
    program = [SCRIPTS[pane.tool]] if portable else [sys.executable, "-m", MODULES[pane.tool]]
    command = shlex.join(program + extra)
    if portable:
        return command
    return f"FAKEHW_RUNTIME_DIR={shlex.quote(runtime)} {command}"


def tmux(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["tmux", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise DemoError(f"tmux {args[0]} failed: {result.stderr.strip()}")
    return result


def session_exists(name: str) -> bool:
    return tmux("has-session", "-t", f"={name}", check=False).returncode == 0


def prepare_cluster(args: argparse.Namespace) -> str:
    """Start (or adopt) the daemon every pane will share; returns its runtime dir."""
    from fakehw.runtime import runtime_paths
    from fakehw.train.cli import UsageError, check_arguments, connect

    notices: list[str] = []
    try:
        check_arguments(train_args(args))  # refused here, not in a pane
        client = connect(args, notices.append)[0]
    except UsageError as exc:
        raise DemoError(str(exc), 2) from None
    except RuntimeError as exc:
        raise DemoError(str(exc)) from None
    for notice in notices:
        print(f"fakehw demo: {notice}", file=sys.stderr)
    client.close()
    return runtime_paths(create=True).root


def start(args: argparse.Namespace, layout: Layout) -> str:
    if shutil.which("tmux") is None:
        raise DemoError(INSTALL_HINT)
    inside = bool(os.environ.get("TMUX")) and not args.detach
    if not inside and session_exists(args.session):
        raise DemoError(
            f"a tmux session named {args.session!r} exists; attach to it "
            f"(tmux attach -t {args.session}), end it (fakehw demo --kill --session "
            f"{args.session}) or choose another --session"
        )
    runtime = prepare_cluster(args)
    commands = [pane_command(p, args, runtime, portable=False) for p in layout.panes]
    if inside:
        created = tmux("new-window", "-P", "-F", "#{pane_id}", "-n", f"fakehw-{layout.name}",
                       commands[0])  # fmt: skip
    else:
        columns, rows = shutil.get_terminal_size(DETACHED_SIZE)
        if args.detach or not sys.stdout.isatty():
            columns, rows = DETACHED_SIZE
        created = tmux("new-session", "-d", "-P", "-F", "#{pane_id}", "-s", args.session,
                       "-n", f"fakehw-{layout.name}", "-x", str(columns), "-y", str(rows),
                       commands[0])  # fmt: skip
    pane_ids = [created.stdout.strip()]
    window = tmux("display-message", "-p", "-t", pane_ids[0], "#{window_id}").stdout.strip()
    # A pane whose program ends keeps its last screen (nothing vanishes mid-recording).
    tmux("set-option", "-w", "-t", window, "remain-on-exit", "on")
    for pane, command in zip(layout.panes[1:], commands[1:], strict=True):
        size = f"{pane.size}%"
        if pane.split == "h" and pane.columns:
            # wide enough for the tool (nvidia-smi's table is 89 columns), leaving the
            # log at least 60: the layout fits the terminal it opens in
            width = int(tmux("display-message", "-p", "-t", pane_ids[pane.of],
                             "#{pane_width}").stdout)  # fmt: skip
            size = str(max(min(pane.columns, width - 61), width * pane.size // 100))
        split = tmux("split-window", "-P", "-F", "#{pane_id}", f"-{pane.split}", "-l", size,
                     "-t", pane_ids[pane.of], command)  # fmt: skip
        pane_ids.append(split.stdout.strip())
    tmux("select-pane", "-t", pane_ids[0])
    if not inside and not args.detach and sys.stdout.isatty():
        os.execvp("tmux", ["tmux", "attach-session", "-t", args.session])
    return window


def kill(session: str) -> None:
    """End the session, its programs, and the daemon if nothing else uses it."""
    if shutil.which("tmux") is None:
        raise DemoError(INSTALL_HINT)
    if not session_exists(session):
        raise DemoError(f"no tmux session named {session!r}")
    panes = tmux("list-panes", "-s", "-t", f"={session}", "-F", "#{pane_pid}").stdout.split()
    tmux("kill-session", "-t", f"={session}")
    import psutil

    deadline = time.monotonic() + 10
    for pid in map(int, panes):
        try:
            process = psutil.Process(pid)
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            process.kill()
    _stop_idle_daemon()


def _stop_idle_daemon() -> None:
    from fakehw.client import Client, DaemonUnavailable

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with Client.connect(client_name="fakehw demo", autostart=False) as client:
                status = client.request("status")
                if status["processes"] or status["clients"] > 1:
                    time.sleep(0.2)  # ranks still detaching, viewers still closing
                    continue
                client.request("shutdown")
                return
        except DaemonUnavailable:
            return
    print("fakehw demo: the daemon is still in use by others; left running", file=sys.stderr)


def tmuxp_yaml(args: argparse.Namespace, layout: Layout) -> str:
    """The layout as a tmuxp session file (the daemon is started by the first tool)."""
    tmux_layout = {"classic": "even-horizontal", "nvitop": "even-horizontal",
                   "cluster": "main-vertical", "ops": "tiled"}[layout.name]  # fmt: skip
    lines = [
        f"session_name: {args.session}",
        "windows:",
        f"  - window_name: fakehw-{layout.name}",
        f"    layout: {tmux_layout}",
        "    options:",
        "      remain-on-exit: 'on'",
        "    panes:",
    ]
    for pane in layout.panes:
        command = pane_command(pane, args, "", portable=True)
        lines += ["      - shell_command:", f"          - {command}"]
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
        default=DEFAULT_SESSION,
        metavar="NAME",
        help=f"tmux session name (default {DEFAULT_SESSION})",
    )
    parser.add_argument(
        "--detach", action="store_true", help="start the session without attaching to it"
    )
    parser.add_argument(
        "--kill",
        action="store_true",
        help="end the session named by --session and everything it started",
    )
    parser.add_argument(
        "--print-tmuxp", action="store_true", help="print the layout as a tmuxp YAML file and exit"
    )
    parser.add_argument("--seed", type=int, help="fake-train's seed (same seed, same run)")
    parser.add_argument("--gpus", type=int, metavar="N", help="total GPUs (as fake-train)")
    parser.add_argument("--nodes", type=int, metavar="N", help="nodes (as fake-train)")
    parser.add_argument("--gpu-model", metavar="MODEL", help="GPU model (as fake-train)")
    parser.add_argument(
        "--speed-factor", type=float, metavar="X", help="play the run X times faster"
    )
    parser.add_argument("--style", help="fake-train's log style")
    parser.add_argument("--model", help="fake-train's model")
    parser.add_argument("--task", help="fake-train's task")  # fmt: skip


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
        print(tmuxp_yaml(args, layout), end="")
        return 0
    if args.kill:
        kill(args.session)
        print(f"fakehw demo: session {args.session!r} ended")
        return 0
    window = start(args, layout)
    print(f"fakehw demo: {layout.name} running in tmux session {args.session!r} ({window}); "
          f"attach with `tmux attach -t {args.session}`, end with "
          f"`fakehw demo --kill --session {args.session}`")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fakehw demo")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DemoError as exc:
        print(f"fakehw demo: {exc}", file=sys.stderr)
        return exc.code
