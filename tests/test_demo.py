"""fakehw demo: every layout in a real (isolated) tmux server, and nothing left after --kill."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import Node, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from fakehw.service.client import Client

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
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the tmuxp file (test extras)")
    listed = demo(tmux_server, "--list")
    for name in EXPECTED:
        assert re.search(rf"^{name}\s+\S", listed.stdout, re.M)
    printed = demo(tmux_server, "ops", "--print-tmuxp", "--seed", "9")
    assert printed.returncode == 0, printed.stderr
    session = yaml.safe_load(printed.stdout)
    assert session["session_name"] == "fakehw"
    commands = [pane["shell_command"] for pane in session["windows"][0]["panes"]]
    assert commands == [["fake-train --seed 9"], ["fake-nvidia-smi dmon -s pu"],
                        ["fake-gpustat -i 1 -cp"], ["fake-nvidia-smi pmon -s um"]]  # fmt: skip


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
    assert "Traceback" not in missing.stderr


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


# ------------------------------------------------------------------ session names
def tmux_sessions(env: dict[str, str]) -> list[str]:
    listed = subprocess.run(["tmux", "list-sessions", "-F", "#{session_name}"], env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    return listed.stdout.splitlines()


def daemon_running(env: dict[str, str]) -> bool:
    status = subprocess.run([sys.executable, "-m", "fakehw", "daemon", "status"], env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    return "not running" not in status.stdout


def printed_command(output: str, before: str) -> list[str]:
    """A command the demo printed (`...` after ``before``), as argv that runs it here."""
    found = re.search(rf"{before} `([^`]*)`", output)
    assert found, output
    argv = shlex.split(found.group(1))
    assert argv[0] == "fakehw"
    return [sys.executable, "-m", "fakehw", *argv[1:]]


def demo_programs(runtime: str) -> list[psutil.Process]:
    """fake-train, its ranks and the viewers on the cluster of ``runtime``, wherever they run."""
    found = []
    for process in psutil.process_iter():
        try:
            environ = process.environ()
            command = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        ours = environ.get("FAKEHW_RUNTIME_DIR") == runtime and process.pid != os.getpid()
        if ours and ("LOCAL_RANK" in environ or "-m fakehw." in command):
            found.append(process)
    return found


def programs_of(env: dict[str, str], target: str) -> set[int]:
    """The pids running in the panes of a tmux session or window, and their descendants."""
    listed = subprocess.run(["tmux", "list-panes", "-s" if not target.startswith("@") else "-a",
                             "-t", target, "-F", "#{window_id} #{pane_pid}"], env=env,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    pids = set()
    for window, pid in (line.split() for line in listed.splitlines()):
        if target.startswith("@") and window != target:
            continue
        process = psutil.Process(int(pid))
        pids |= {process.pid, *(c.pid for c in process.children(recursive=True))}
    return pids


def gone(pids: set[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in pids)  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["a:b.c", "", "-x", "a b", "x" * 101, "héllo", "a=b", "=a", "#x", "#H", "x: {y}", "a'b",
     "$x", "a\\b", "tab\there"],
)  # fmt: skip
def test_session_names_tmux_would_change_are_refused_before_anything_starts(
    tmux_server: dict[str, str], name: str
) -> None:
    result = demo(tmux_server, "--detach", f"--session={name}", "--gpus", "8")
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "cannot be a tmux session name" in last, result.stderr
    assert "ASCII letters, digits, '_' and '-', not starting with '-'" in last
    assert tmux_sessions(tmux_server) == []  # no session, renamed or not
    assert not daemon_running(tmux_server)  # nothing was started for it
    for mode in ("--kill", "--print-tmuxp"):
        refused = demo(tmux_server, mode, f"--session={name}")
        assert refused.returncode == 2 and "cannot be a tmux session name" in refused.stderr
        assert refused.stdout == ""


def test_kill_leaves_alone_a_session_the_demo_did_not_open(tmux_server: dict[str, str]) -> None:
    env = tmux_server
    subprocess.run(["tmux", "new-session", "-d", "-s", "fakehw", "sleep 600"], env=env,
                   check=True)  # fmt: skip
    own = programs_of(env, "=fakehw")
    killed = demo(env, "--kill")  # the default name is the user's own session's
    assert killed.returncode == 1
    assert "'fakehw' was not opened by fakehw demo: left alone" in killed.stderr
    started = demo(env, "--detach", "--gpus", "8")
    assert started.returncode == 1
    assert "a tmux session named 'fakehw' exists (fakehw demo did not open it)" in started.stderr
    assert tmux_sessions(env) == ["fakehw"] and not gone(own)
    assert not daemon_running(env)


def test_inside_tmux_the_printed_kill_ends_the_demo_window_and_frees_its_gpus(
    tmux_server: dict[str, str], tmp_path: Path
) -> None:
    node = Node("h100", 8)  # a cluster someone else uses too: it must stay up
    try:
        other = node.run_process("someone-else", 7, 4000)
        env = {**tmux_server, "FAKEHW_RUNTIME_DIR": node.runtime}
        out, rc = tmp_path / "out", tmp_path / "rc"
        command = (f"{shlex.quote(sys.executable)} -m fakehw demo --gpus 8 --seed 3 "
                   f"--speed-factor 5 >{out} 2>&1; echo $? >{rc}; exec sleep 600")  # fmt: skip
        subprocess.run(["tmux", "new-session", "-d", "-s", "work", "-x", "200", "-y", "50",
                        command], env=env, check=True)  # fmt: skip
        wait_for(lambda: rc.exists() and rc.read_text().strip(), timeout=60)
        assert rc.read_text().strip() == "0", out.read_text()
        printed = out.read_text()
        window = re.search(r"classic running in window (@\d+) of tmux session 'work'", printed)
        assert window, printed

        def status() -> dict[str, object]:
            with Client.connect(root=node.runtime, autostart=False) as client:
                return client.request("status")  # type: ignore[no-any-return]

        wait_for(lambda: len(status()["processes"]) == 9, timeout=60)  # type: ignore[arg-type]
        started = programs_of(env, window.group(1))
        user_shell = programs_of(env, "=work") - started
        killed = subprocess.run(printed_command(printed, "end with"), env=tmux_server,
                                capture_output=True, text=True, timeout=60,
                                check=False)  # fmt: skip
        assert killed.returncode == 0, killed.stderr
        assert "still in use by others; left running" in killed.stderr
        wait_for(lambda: gone(started), timeout=15)
        processes = status()["processes"]
        assert [p["pid"] for p in processes] == [other]  # type: ignore[index, union-attr]
        windows = subprocess.run(["tmux", "list-windows", "-t", "=work", "-F", "#{window_id}"],
                                 env=env, capture_output=True, text=True,
                                 check=True).stdout.split()  # fmt: skip
        assert window.group(1) not in windows and len(windows) == 1
        assert user_shell and not gone(user_shell)  # the user's own pane is untouched
    finally:
        node.close()


def test_kill_from_a_shell_on_another_cluster_stops_the_demos_own_daemon(
    tmux_server: dict[str, str],
) -> None:
    env = tmux_server
    started = demo(env, "--detach", "--session", "rec", "--gpus", "8")
    assert started.returncode == 0, started.stderr
    assert daemon_running(env)
    elsewhere = {**env, "FAKEHW_RUNTIME_DIR": tempfile.mkdtemp(prefix="fhw-other-")}
    killed = subprocess.run(printed_command(started.stdout, "end with"), env=elsewhere,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert killed.returncode == 0, killed.stderr
    assert tmux_sessions(env) == []
    assert not daemon_running(env)  # the daemon the demo's panes used, not this shell's
    assert not daemon_running(elsewhere)


# ------------------------------------------------------------------ interrupted starts
@pytest.mark.parametrize(("signal_name", "code"), [("INT", 130), ("HUP", 129), ("TERM", 143)])
def test_a_signal_while_the_demo_starts_closes_what_it_opened(
    tmux_server: dict[str, str], tmp_path: Path, signal_name: str, code: int
) -> None:
    real = shutil.which("tmux")
    assert real
    wrapper = tmp_path / "bin" / "tmux"  # Ctrl-C (or a closed terminal) as the panes split
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = split-window ] && kill -{signal_name} $PPID\n'
                       f'exec {shlex.quote(real)} "$@"\n')  # fmt: skip
    wrapper.chmod(0o755)
    env = {**tmux_server, "PATH": f"{wrapper.parent}{os.pathsep}{tmux_server['PATH']}"}
    result = demo(env, "ops", "--detach", "--session", "sig", "--gpus", "8")
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert tmux_sessions(tmux_server) == []
    wait_for(lambda: not demo_programs(env["FAKEHW_RUNTIME_DIR"]), timeout=15)
    assert not daemon_running(env)


def read_all(terminal: int) -> str:
    """What was written to a terminal whose other side is closed."""
    chunks = []
    with contextlib.suppress(OSError):  # EIO: nothing more
        while chunk := os.read(terminal, 65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def demo_on_a_terminal(
    env: dict[str, str], *args: str, keyboard: bool = True
) -> tuple[int, str, str]:
    """Run the demo with its output on a terminal (and its input, unless not
    ``keyboard``); returns the exit code, what it printed and its stderr."""
    terminal, child_side = pty.openpty()
    stdin = child_side if keyboard else subprocess.DEVNULL
    with subprocess.Popen([sys.executable, "-m", "fakehw", "demo", *args], stdin=stdin,
                          stdout=child_side, stderr=subprocess.PIPE, env=env,
                          text=True) as process:  # fmt: skip
        os.close(child_side)
        try:
            stderr = process.communicate(timeout=60)[1]
            printed = read_all(terminal)
        finally:
            process.kill()
            os.close(terminal)
    return process.returncode, printed, stderr


def test_a_layout_the_terminal_cannot_hold_is_refused_and_closed(
    tmux_server: dict[str, str],
) -> None:
    env = {**tmux_server, "COLUMNS": "2", "LINES": "2"}  # a 2x2 terminal
    code, _, stderr = demo_on_a_terminal(env, "ops", "--gpus", "8")
    assert code == 1, stderr
    assert "the ops layout does not fit a 2x2 terminal" in stderr and "--detach" in stderr
    assert tmux_sessions(tmux_server) == []
    wait_for(lambda: not demo_programs(env["FAKEHW_RUNTIME_DIR"]), timeout=15)
    assert not daemon_running(env)


def test_with_no_keyboard_to_attach_the_demo_runs_detached_and_says_how_to_reach_it(
    tmux_server: dict[str, str],
) -> None:
    code, printed, stderr = demo_on_a_terminal(tmux_server, "--gpus", "8", keyboard=False)
    assert code == 0, stderr
    assert "attach with `tmux attach -t fakehw`" in printed, printed
    assert tmux_sessions(tmux_server) == ["fakehw"]
    killed = demo(tmux_server, "--kill")
    assert killed.returncode == 0, killed.stderr


# ------------------------------------------------------------------ tmuxp files
TRICKY_NAMES = ["null", "Null", "true", "no", "on", "off", "y", "123", "0", "1_0", "0x1F",
                "1e3", "0o17", "nan", "_", "a-", "__"]  # fmt: skip


def print_tmuxp(*args: str) -> str:
    """What `fakehw demo ... --print-tmuxp` prints (run in this process: many runs)."""
    from fakehw.tools.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", *args, "--print-tmuxp"]) == 0
    return out.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    name=st.one_of(st.sampled_from(TRICKY_NAMES),
                   st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}", fullmatch=True)),
    layout=st.sampled_from(list(EXPECTED)),
    seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_tmuxp_file_reads_back_the_session_name_and_every_command(
    name: str, layout: str, seed: int
) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the tmuxp file (test extras)")
    from fakehw.tools.demo import LAYOUTS, SCRIPTS

    gpu_model = "NVIDIA H100 80GB HBM3"
    session = yaml.safe_load(print_tmuxp(layout, "--session", name, "--seed", str(seed),
                                         "--gpu-model", gpu_model))  # fmt: skip
    assert session["session_name"] == name
    (window,) = session["windows"]
    assert window["window_name"] == f"fakehw-{layout}"
    assert window["options"] == {"remain-on-exit": "on"}
    train = ["--seed", str(seed), "--gpu-model", gpu_model]
    expected = [[SCRIPTS[p.tool], *p.args, *(train if p.tool == "train" else [])]
                for p in LAYOUTS[layout].panes]  # fmt: skip
    assert [shlex.split(c) for p in window["panes"] for c in p["shell_command"]] == expected


ANY_CHARACTER = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # argv bytes that are not UTF-8 arrive as surrogates
    st.sampled_from(list("\"'\\:#{}[]&*!|>%@`,?- \n\r\t\x00\x85\u2028\u2029\ufeff")),
)


@settings(max_examples=200, deadline=None)
@given(name=st.text(ANY_CHARACTER), gpu_model=st.text(ANY_CHARACTER))
def test_tmuxp_writer_reads_back_any_string(name: str, gpu_model: str) -> None:
    """The YAML writer itself, beyond what --session and fake-train's checks let through."""
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the tmuxp file (test extras)")
    from fakehw.tools.demo import LAYOUTS, tmuxp_yaml

    text = tmuxp_yaml(argparse.Namespace(session=name, gpu_model=gpu_model), LAYOUTS["classic"])
    session = yaml.safe_load(text)
    assert session["session_name"] == name
    (train, smi) = (p["shell_command"] for p in session["windows"][0]["panes"])
    assert [shlex.split(c) for c in train] == [["fake-train", "--gpu-model", gpu_model]]
    assert smi == ["fake-nvidia-smi -l 1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu-model", "h1000"], "unknown GPU model 'h1000'"),
        (["--gpu-model", "x: {y}"], "unknown GPU model 'x: {y}'"),
        (["--speed-factor", "-3"], "the speed factor must be in (0, 1000]"),
        (["--model", "nope"], "unknown model 'nope'"),
    ],
)
def test_print_tmuxp_refuses_what_fake_train_would(
    tmux_server: dict[str, str], args: list[str], message: str
) -> None:
    result = demo(tmux_server, "--print-tmuxp", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stdout == ""  # no file that starts a fake-train which refuses at once


def test_tensorboard_opens_beside_the_run_and_serves_its_scalars(
    tmux_server: dict[str, str], tmp_path: Path
) -> None:
    import json
    import socket
    import urllib.request

    env = tmux_server
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "run"
    started = demo(env, "--detach", "--session", "tb", "--seed", "3", "--gpus", "8",
                   "--speed-factor", "100", "--tensorboard", "--tensorboard-port", str(port),
                   "--output-dir", str(out))  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert f"TensorBoard on http://127.0.0.1:{port}/" in started.stdout
    assert f"fakehw plot {out}" in started.stdout
    ids = panes(env, "tb")
    assert len(ids) == 3

    def served() -> dict[str, object]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags",
                                        timeout=5) as reply:  # fmt: skip
                tags: dict[str, dict[str, object]] = json.load(reply)
        except OSError:
            return {}
        return tags.get("tensorboard", {}) if "train/loss" in tags.get("tensorboard", {}) else {}

    try:
        tags = wait_for(served, timeout=90, interval=0.5)
    except BaseException:
        for pane in ids:
            print(f"pane {pane} shows:\n{capture(env, pane)[-2000:]}")
        raise
    assert {"train/loss", "gpu/power_w"} <= set(tags)
    assert demo(env, "--kill", "--session", "tb").returncode == 0


def test_tensorboard_without_the_package_says_how(tmux_server: dict[str, str]) -> None:
    code = ("import sys; sys.modules['tensorboard'] = None\n"
            "from fakehw.tools.cli import main\n"
            "sys.exit(main(['demo', '--detach', '--tensorboard']))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env=tmux_server, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "--tensorboard needs the tensorboard package" in result.stderr
    assert "tensorboard --logdir DIR" in result.stderr
    listed = subprocess.run(["tmux", "list-sessions"], env=tmux_server, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert listed.returncode != 0  # nothing was opened
