"""fakehw demo: every layout in a real (isolated) tmux server, and nothing left after --kill."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import wait_for

EXPECTED = {  # layout: what each pane shows once running
    "classic": ["│ loss", "NVIDIA-SMI 580.159.04"],
    "nvitop": ["│ loss", "(Press h for help or q to quit)"],
    "cluster": ["│ loss", "8 x NVIDIA H100 80GB HBM3 on 1 node", "NVIDIA-SMI 580.159.04"],
    "ops": ["│ loss", "# gpu", "NVIDIA H100 80GB HBM3 |", "# gpu"],
}


@pytest.fixture
def tmux_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    if not any(os.access(os.path.join(d, "tmux"), os.X_OK)
               for d in os.environ["PATH"].split(os.pathsep)):  # fmt: skip
        pytest.skip("tmux is not installed (.ci/run installs it)")
    sockets = tmp_path / "tmux"
    sockets.mkdir()
    monkeypatch.setenv("TMUX_TMPDIR", str(sockets))  # a private tmux server
    monkeypatch.delenv("TMUX", raising=False)
    env = dict(os.environ)
    yield env
    subprocess.run(["tmux", "kill-server"], env=env, capture_output=True, check=False)


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakehw", "demo", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def panes(env: dict[str, str], session: str) -> list[str]:
    out = subprocess.run(["tmux", "list-panes", "-s", "-t", session, "-F", "#{pane_id}"],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.split()


def capture(env: dict[str, str], pane: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-S", "-", "-t", pane], env=env,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_layout_runs_and_leaves_nothing_behind(layout: str, tmux_server: dict[str, str]) -> None:
    env = tmux_server
    started = demo(env, layout, "--detach", "--session", "t", "--seed", "3", "--gpus", "8",
                   "--speed-factor", "5")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "running in tmux session 't'" in started.stdout
    ids = panes(env, "t")
    assert len(ids) == len(EXPECTED[layout])

    def shown() -> bool:
        screens = [capture(env, pane) for pane in ids]
        # every pane shows one of the expected things, and each expected thing is shown
        unmatched = list(screens)
        for expected in EXPECTED[layout]:
            hit = next((k for k, text in enumerate(unmatched) if expected in text), None)
            if hit is None:
                return False
            unmatched.pop(hit)
        return True

    try:
        wait_for(shown, timeout=40)
    except BaseException:
        for pane in ids:
            print(f"pane {pane} shows:\n{capture(env, pane)[-2000:]}")
        raise
    pane_pids = subprocess.run(["tmux", "list-panes", "-s", "-t", "t", "-F", "#{pane_pid}"],
                               env=env, capture_output=True, text=True,
                               check=True).stdout.split()  # fmt: skip
    started_pids = set()
    for pid in map(int, pane_pids):
        process = psutil.Process(pid)
        started_pids |= {pid, *(c.pid for c in process.children(recursive=True))}
    assert len(started_pids) >= len(ids) + 8  # the tools and fake-train's 8 ranks
    killed = demo(env, "--kill", "--session", "t")
    assert killed.returncode == 0, killed.stderr

    def gone() -> bool:
        return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                       for pid in started_pids)  # fmt: skip

    wait_for(gone, timeout=15)
    status = subprocess.run([sys.executable, "-m", "fakehw", "daemon", "status"], env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert "not running" in status.stdout  # the daemon it started is gone too


def test_list_and_tmuxp(tmux_server: dict[str, str]) -> None:
    listed = demo(tmux_server, "--list")
    for name in EXPECTED:
        assert re.search(rf"^{name}\s+\S", listed.stdout, re.M)
    yaml = demo(tmux_server, "ops", "--print-tmuxp", "--seed", "9").stdout
    assert yaml.startswith("session_name: fakehw\nwindows:\n")
    assert "- fake-train --seed 9" in yaml and "- fake-nvidia-smi pmon -s um" in yaml
    assert yaml.count("shell_command:") == 4


def test_errors_are_clear(tmux_server: dict[str, str]) -> None:
    unknown = demo(tmux_server, "dashboard")
    assert unknown.returncode == 2 and "unknown layout 'dashboard'" in unknown.stderr
    no_tmux = demo({**tmux_server, "PATH": str(Path(sys.executable).parent)}, "--detach")
    assert no_tmux.returncode == 1
    assert "needs tmux" in no_tmux.stderr and "apt-get install tmux" in no_tmux.stderr
    first = demo(tmux_server, "classic", "--detach", "--session", "busy", "--gpus", "8")
    assert first.returncode == 0, first.stderr
    second = demo(tmux_server, "classic", "--detach", "--session", "busy", "--gpus", "8")
    assert second.returncode == 1 and "exists" in second.stderr
    assert demo(tmux_server, "--kill", "--session", "busy").returncode == 0
    missing = demo(tmux_server, "--kill", "--session", "nothing")
    assert missing.returncode == 1 and "no tmux session named 'nothing'" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speed-factor", "-3"], "the speed factor must be in (0, 1000]"),
        (["--gpus", "0"], "0 must be at least 1"),
        (["--gpus", "3", "--nodes", "2"], "cannot be split evenly"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--style", "fancy"], "invalid choice: 'fancy'"),
        (["--seed", "-1"], "the seed must be between 0 and 4294967295"),
    ],
)
def test_values_fake_train_would_refuse_are_refused_up_front(
    tmux_server: dict[str, str], args: list[str], message: str
) -> None:
    result = demo(tmux_server, "--detach", "--session", "bad", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    sessions = subprocess.run(["tmux", "ls"], env=tmux_server, capture_output=True, text=True,
                              check=False)  # fmt: skip
    assert "bad:" not in sessions.stdout  # no session with a pane that failed at once
