"""Shared fixtures: isolated runtime directories, real daemons, real captures."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Node, alive, node_fixture


@pytest.fixture(scope="session", autouse=True)
def private_temp_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every temporary directory of the run (the tests' and their programs') lives in one
    short directory, removed at the end with any daemon still running in it."""
    tmp_path_factory.getbasetemp()  # pytest's own stays where pytest keeps it
    root = Path(tempfile.mkdtemp(prefix="fhw-tests-"))
    previous = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(root)
    os.environ["TMPDIR"] = str(root)
    yield root
    tempfile.tempdir = previous[0]
    if previous[1] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous[1]
    for pid_file in root.rglob("daemon.pid"):
        _stop_daemon(pid_file.parent)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every test gets its own runtime dir and config: no test touches a user's daemon.

    Unix socket paths are limited to ~100 bytes, so the runtime dir is a short
    directory under the system temp dir rather than pytest's long tmp_path.
    """
    root = Path(tempfile.mkdtemp(prefix="fhw-"))
    runtime = root / "rt"
    monkeypatch.setenv("FAKEHW_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("FAKEHW_CONFIG", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    # A tmux server of the test's own: a demo a test starts (or one a bug starts) never
    # lands in the user's tmux, and a session the user has never fails a test.
    monkeypatch.setenv("TMUX_TMPDIR", str(root))
    monkeypatch.delenv("TMUX", raising=False)
    yield runtime
    _stop_daemon(runtime)
    if any(root.glob("tmux-*")):
        subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)
    with contextlib.suppress(OSError):
        for path in sorted(root.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        root.rmdir()


def _stop_daemon(runtime: Path) -> None:
    """Kill whatever daemon a test left behind in its runtime dir."""
    pid_file = runtime / "daemon.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runtime_dir(isolated_environment: Path) -> Path:
    return isolated_environment


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real, harmless child process to attach to the fake GPUs."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def tmux(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not _has_tmux():
        pytest.skip("tmux is not installed (.ci/run installs it)")
    socket = str(tmp_path / "tmux.sock")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-S", socket, *args], capture_output=True, text=True,
                              check=True, env=env).stdout  # fmt: skip

    run("new-session", "-d", "-x", "160", "-y", "48", "-s", "t", "bash --norc --noprofile")
    yield run
    subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, check=False)


def _has_tmux() -> bool:
    return any(os.access(os.path.join(d, "tmux"), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep))  # fmt: skip


# ------------------------------------------------- the real captures' machines
h100 = node_fixture("h100", "h100", 1, "An H100 node as the real capture's host (one GPU), idle.")
h200x2 = node_fixture("h200x2", "h200", 2, "Two idle H200s, as the real capture's host.")


@pytest.fixture(scope="module")
def busy_h100(h100: Node) -> Node:
    """The H100 node training as in the real capture: python3 holding 46608 MiB."""
    if not h100.children:
        h100.run_process("python3", 0, 46608)
        h100.wait_busy(1)
    return h100


@pytest.fixture(scope="module")
def busy_h200x2() -> Iterator[Node]:
    """Two H200s, each with a DDP rank holding 52806 MiB, as in the real capture."""
    node = Node("h200", 2)
    for gpu in (0, 1):
        node.run_process("/opt/torch/.venv/bin/python", gpu, 52806)
    node.wait_busy(2)
    yield node
    node.close()
