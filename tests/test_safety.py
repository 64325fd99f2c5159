"""Attacks on the daemon's state and on other people's processes (issue 12).

A refused request changes nothing; a daemon that breaks goes down loudly; a
signal goes only to a process provably attached as itself (PID and start time).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from helpers import alive, fakehw, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakehw.service.client import Client, RequestFailed


@pytest.fixture
def sleeper_pair() -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """Two harmless live processes of the user's: a 'job' and a bystander."""
    processes = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)
    ]
    yield processes[0], processes[1]
    for process in processes:
        process.kill()
        process.wait()


def start_daemon(*flags: str) -> Client:
    started = fakehw("daemon", "start", *flags)
    assert started.returncode == 0, started.stderr
    return Client.connect(autostart=False)


def cluster_view(client: Client) -> dict[str, Any]:
    """What a refused request must leave as it was: the processes, every GPU's memory."""
    processes = sorted(
        (p["pid"], p["phase"], tuple(p["gpus"]), p["watch_pid"])
        for p in client.request("status")["processes"]
    )
    snapshot = client.snapshot(0)
    node = snapshot["nodes"][0]
    return {
        "processes": processes,
        "rows": sorted((r["pid"], r["gpu_index"]) for r in node["processes"]),
        "faults": [g["faults"] for g in node["gpus"]],
        "ecc": [g["ecc"]["volatile_dram_corrected"] for g in node["gpus"]],
    }


def log_text(runtime: Path) -> str:
    return (runtime / "daemon.log").read_text() if (runtime / "daemon.log").exists() else ""


# ------------------------------------------------------------ refused requests
def test_an_attach_with_a_bad_phase_leaves_no_trace_and_the_daemon_lives(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    client = start_daemon()
    daemon_pid = client.hello["daemon_pid"]
    before = cluster_view(client)
    with pytest.raises(RequestFailed) as refused:
        client.request("attach", pid=sleeper.pid, name="p", gpus=[1], phase="dance")
    assert refused.value.code == "bad_request" and "unknown phase 'dance'" in refused.value.message
    time.sleep(1.5)  # several ticks and a save: what used to kill the model thread
    assert cluster_view(client) == before
    assert alive(daemon_pid) and client.request("status")["daemon_pid"] == daemon_pid
    # and the same pid attaches properly afterwards
    client.request("attach", pid=sleeper.pid, name="p", gpus=[1], phase="train")
    wait_for(lambda: client.snapshot(0)["nodes"][0]["gpus"][1]["utilization_gpu_pct"] > 90)
    client.close()
    assert "Traceback" not in log_text(runtime_dir)


STATE_FUZZ = settings(max_examples=120, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
# Wrong values for each argument of each op; a request is a valid one with one (or, now
# and then, two) of its arguments replaced by a wrong value, so that most requests get
# past the protocol's type checks and reach the cluster's own checks.
WRONG: dict[str, list[object]] = {
    "pid": [0, -3, 1, 999_999_999, 2**40, "12", True, None],
    "name": ["", "x" * 300, 5, None],
    "gpus": [[], [-1], [4], [9], [0, 0], ["0"], [True], 0, None],
    "phase": ["dance", "", "TRAIN", "idle", 3, None],
    "memory_plan": [{"train": 200_000}, {"dance": 10}, {"train": -5}, {"train": 1.5},
                    {"train": True}, [1, 2], "train"],
    "watch_pid": [0, 999_999_999, -1, "1"],
    "user": ["", 5, "x" * 100],
    "job": [7, "x" * 200],
    "memory_mib": [-1, 81071, 200_000, 1.5, "1", True],
    "cycle_s": [0, 0.01, 601, "1", -1e300],
    "intensity": [-0.1, 1.6, "1", True],
    "gpu": [-1, 4, 9, "0", True, None],
    "fault": ["meltdown", "", "CLEAR", 5, None],
    "count": [0, -1, 2_000_000, 1.5, "2"],
}  # fmt: skip


RESIDENT = 7_000_001  # a record attached before each example: what set_phase and detach aim at


def _requests(job: int) -> st.SearchStrategy[dict[str, Any]]:
    """State-changing requests, valid but for one or two wrong arguments. Attaches are
    records watched through ``job`` (a live process), each under a fresh PID."""

    @st.composite
    def one(draw: st.DrawFn) -> dict[str, Any]:
        op = draw(st.sampled_from(["attach", "attach", "set_phase", "detach", "inject"]))
        if op == "attach":
            request: dict[str, Any] = {
                "op": "attach", "pid": draw(st.integers(8_000_000, 9_000_000)), "name": "p",
                "gpus": draw(st.sampled_from([[0], [1], [2], [3], [0, 1], [2, 3]])),
                "phase": draw(st.sampled_from(["context", "train", "eval"])),
                "memory_plan": {"train": draw(st.integers(1000, 40000))}, "watch_pid": job,
                "user": "u", "job": "j",
            }  # fmt: skip
        elif op == "set_phase":
            request = {"op": "set_phase", "pid": RESIDENT,
                       "phase": draw(st.sampled_from(["train", "eval", "free", "checkpoint"])),
                       "memory_mib": draw(st.integers(0, 40000)), "cycle_s": 1.0,
                       "intensity": 1.0}  # fmt: skip
        elif op == "detach":
            request = {"op": "detach", "pid": RESIDENT}
        else:
            request = {
                "op": "inject",
                "gpu": draw(st.integers(0, 3)),
                "fault": draw(st.sampled_from(["ecc", "thermal", "clear"])),
                "count": 2,
            }
        names = sorted(set(request) - {"op"})
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True)):
            wrong = draw(st.sampled_from([*WRONG[name], "omitted"]))
            if wrong == "omitted":
                request.pop(name)
            else:
                request[name] = wrong
        return request

    return one()


@STATE_FUZZ
@given(data=st.data())
def test_fuzzed_state_changes_are_all_or_nothing(
    runtime_dir: Path,
    sleeper_pair: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
    data: st.DataObject,
) -> None:
    """Valid-looking but wrong arguments to every op that changes the cluster: each
    request either succeeds or changes nothing, and the daemon keeps serving."""
    job, bystander = sleeper_pair
    if not (runtime_dir / "daemon.sock").exists():
        start_daemon("--gpus-per-node", "4").close()
    with Client.connect(autostart=False) as client:
        daemon_pid = client.hello["daemon_pid"]
        with contextlib.suppress(RequestFailed):  # there already, or the GPU is full
            client.request("attach", pid=RESIDENT, watch_pid=job.pid, name="p", gpus=[3])
        for request in data.draw(st.lists(_requests(job.pid), min_size=1, max_size=6)):
            before = cluster_view(client)
            try:
                client.request(**request)
            except RequestFailed as refused:
                assert refused.code in ("bad_request", "not_found", "conflict", "out_of_memory")
                assert cluster_view(client) == before, request
        assert client.request("status")["daemon_pid"] == daemon_pid
    assert alive(job.pid) and alive(bystander.pid)  # no one was signalled
    assert "Traceback" not in log_text(runtime_dir)


# ------------------------------------------------------------ a broken daemon
BROKEN_DAEMON = """\
import sys
import fakehw.{module} as target
original = target.{cls}.{method}
calls = [0]
def broken(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == {after}:
        raise ZeroDivisionError("an injected bug")
    return original(self, *args, **kwargs)
target.{cls}.{method} = broken
from fakehw.tools.cli import main
sys.exit(main(["daemon", "run", "--runtime-dir", sys.argv[1]]))
"""


@pytest.mark.parametrize(
    ("module", "cls", "method", "after"),
    [("devices", "Cluster", "step", 10), ("service.daemon", "Daemon", "_watch_pids", 3)],
    ids=["the model thread dies", "the main loop dies"],
)
def test_a_daemon_that_breaks_goes_down_loudly(
    runtime_dir: Path, module: str, cls: str, method: str, after: int
) -> None:
    script = BROKEN_DAEMON.format(module=module, cls=cls, method=method, after=after)
    daemon = subprocess.Popen(
        [sys.executable, "-c", script, str(runtime_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: (runtime_dir / "daemon.sock").exists(), timeout=15)
    _, stderr = daemon.communicate(timeout=20)
    assert daemon.returncode == 1  # exits non-zero, not half alive
    assert "an injected bug" in stderr and "Traceback" in stderr  # the log: stderr here
    assert not (runtime_dir / "daemon.sock").exists()
    assert not (runtime_dir / "daemon.pid").exists()
    # the next client starts a fresh daemon in the same directory
    with Client.connect() as client:
        assert client.request("status")["daemon_pid"] != daemon.pid


def test_a_detached_daemon_that_breaks_says_why_in_its_log(runtime_dir: Path) -> None:
    script = BROKEN_DAEMON.format(module="devices", cls="Cluster", method="step", after=10)
    script = script.replace("sys.argv[1]]", 'sys.argv[1], "--detach"]')
    launcher = subprocess.run([sys.executable, "-c", script, str(runtime_dir)],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert launcher.returncode == 0, launcher.stderr
    pid = int((runtime_dir / "daemon.pid").read_text())
    wait_for(lambda: not alive(pid), timeout=10)
    log = log_text(runtime_dir)
    assert "the model thread died" in log and "ZeroDivisionError: an injected bug" in log
    assert not (runtime_dir / "daemon.sock").exists() and not (runtime_dir / "daemon.pid").exists()


# ------------------------------------------------------------ signals
def test_rank_crash_on_another_node_signals_nothing(
    runtime_dir: Path, sleeper_pair: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]
) -> None:
    """A rank of an imaginary node is a record watched through its launcher: crashing
    it ends the record; the process of this machine that has its PID lives on."""
    launcher, bystander = sleeper_pair
    client = start_daemon("--nodes", "2", "--gpus-per-node", "2")
    # the record's PID is, by chance, the PID of an unrelated program of the user's
    client.request("attach", pid=bystander.pid, watch_pid=launcher.pid, name="python",
                   gpus=[3], job="j", phase="train")  # fmt: skip
    crashed = fakehw("inject", "rank-crash", "--node", "1", "--gpu", "1")
    assert crashed.returncode == 0, crashed.stderr
    assert f"ended {bystander.pid} (not processes of this machine" in crashed.stdout
    assert "killed" not in crashed.stdout
    time.sleep(0.5)
    assert alive(bystander.pid) and alive(launcher.pid)
    assert client.snapshot(1)["nodes"][0]["processes"] == []  # the record ended
    client.close()


def test_rank_crash_still_kills_a_local_rank_it_has_verified(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A guard, the counterpart of the two tests around it: a process attached as itself,
    whose start time the daemon recorded, is still the one rank-crash kills."""
    client = start_daemon("--gpus-per-node", "2")
    client.request("attach", pid=sleeper.pid, name="python", gpus=[0], phase="train")
    recorded = client.request("status")["processes"][0]
    assert recorded["host_process"] is True
    assert recorded["watch_started"] == pytest.approx(psutil.Process(sleeper.pid).create_time())
    crashed = fakehw("inject", "rank-crash", "--gpu", "0")
    assert crashed.returncode == 0 and f"killed {sleeper.pid}" in crashed.stdout
    sleeper.wait(timeout=5)
    assert sleeper.returncode == -9
    client.close()


def _give_saved_record_to(state_file: Path, old_pid: int, new_pid: int) -> None:
    """Make the saved record of ``old_pid`` name ``new_pid`` instead: what the saved state
    says when the PID has since been given to another program (``new_pid``, started
    well after the recorded start time)."""
    with np.load(state_file) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    for process in meta["processes"]:
        if process["pid"] == old_pid:
            process["pid"] = process["watch_pid"] = new_pid
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(state_file, "wb") as handle:
        np.savez(handle, **arrays)
    assert zipfile.is_zipfile(state_file)


def _train_then_stop_the_daemon(pid: int) -> None:
    """A daemon of 2 GPUs with ``pid`` training on GPU 1 (30000 MiB), stopped: its state,
    the record among it, saved for the next one."""
    client = start_daemon("--gpus-per-node", "2")
    client.request("attach", pid=pid, name="python", gpus=[1], phase="train",
                   memory_plan={"train": 30000})  # fmt: skip
    wait_for(lambda: client.snapshot(0)["nodes"][0]["gpus"][1]["memory_used_mib"] == 30009)
    client.close()
    assert fakehw("daemon", "stop").returncode == 0


def test_a_pid_reused_across_a_daemon_restart_is_not_restored_nor_signalled(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    _train_then_stop_the_daemon(sleeper.pid)
    while time.time() - psutil.Process(sleeper.pid).create_time() < 2.5:
        time.sleep(0.1)  # the program the PID now names starts well after the recorded one
    newcomer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _give_saved_record_to(runtime_dir / "state.npz", sleeper.pid, newcomer.pid)
        client = start_daemon("--gpus-per-node", "2")
        node = client.snapshot(0)["nodes"][0]
        assert node["processes"] == [] and node["gpus"][1]["memory_used_mib"] == 0
        assert "is now another program: detached" in log_text(runtime_dir)
        crashed = fakehw("inject", "rank-crash", "--gpu", "1")
        assert crashed.returncode == 1 and "no process runs on GPU 1" in crashed.stderr
        assert alive(newcomer.pid)
        client.close()
    finally:
        newcomer.kill()
        newcomer.wait()


def test_a_process_still_alive_across_a_restart_is_restored(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A guard: the start-time check must not drop a process that did survive."""
    _train_then_stop_the_daemon(sleeper.pid)
    client = start_daemon("--gpus-per-node", "2")
    node = client.snapshot(0)["nodes"][0]
    assert [p["pid"] for p in node["processes"]] == [sleeper.pid]
    assert node["gpus"][1]["memory_used_mib"] == 30009
    client.close()


# ------------------------------------------------------------ who a PID names
@pytest.fixture
def threaded_sleeper() -> Iterator[tuple[int, int]]:
    """A harmless process of the user's with a second thread: (its PID, the thread's ID)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import threading, time\n"
         "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
         "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    threads = [int(t) for t in os.listdir(f"/proc/{process.pid}/task") if int(t) != process.pid]
    yield process.pid, threads[0]
    process.kill()
    process.wait()


def test_a_thread_is_not_a_process_so_rank_crash_cannot_end_its_program(
    runtime_dir: Path, threaded_sleeper: tuple[int, int]
) -> None:
    """A thread's ID opens /proc/<tid> as a PID does, and SIGKILL sent to it ends its
    whole program: neither a program's thread nor one of the daemon's own may be
    attached as a process."""
    pid, thread = threaded_sleeper
    client = start_daemon("--gpus-per-node", "2")
    daemon_pid = client.hello["daemon_pid"]
    daemon_threads = [int(t) for t in os.listdir(f"/proc/{daemon_pid}/task")
                      if int(t) != daemon_pid]  # fmt: skip
    assert daemon_threads  # the model thread
    for tid in (thread, daemon_threads[0]):
        with pytest.raises(RequestFailed) as refused:
            client.request("attach", pid=tid, name="thread", gpus=[1], phase="train")
        assert refused.value.code == "not_found", refused.value
    crashed = fakehw("inject", "rank-crash", "--gpu", "1")
    assert crashed.returncode == 1 and "no process runs on GPU 1" in crashed.stderr
    assert alive(pid) and alive(daemon_pid)
    client.close()


def test_a_program_started_after_the_recorded_one_is_not_taken_for_it(
    sleeper_pair: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    """What a PID reused within a second would look like: another program, started a
    few tenths of a second after the recorded start time, is not the recorded one."""
    from fakehw.service import pidwatch

    first, _ = sleeper_pair
    recorded = pidwatch.start_time(first.pid)
    assert recorded is not None
    time.sleep(0.3)
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert pidwatch.is_same_process(first.pid, recorded)  # the same reading, exactly
        assert not pidwatch.is_same_process(later.pid, recorded)
    finally:
        later.kill()
        later.wait()


def _can_unshare_pids() -> bool:
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, check=False)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(
    shutil.which("unshare") is None or not _can_unshare_pids(),
    reason="needs unshare(1) and the right to make a PID namespace",
)
def test_a_client_in_another_pid_namespace_may_not_attach(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A container sharing the runtime directory: its PID 1 (or any) names another
    process here, which a rank-crash would then kill."""
    client = start_daemon("--gpus-per-node", "2")
    inside = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
         "import os\nfrom fakehw.service.client import Client, RequestFailed\n"
         "client = Client.connect(autostart=False)\n"
         f"for pid in (os.getpid(), {sleeper.pid}):\n"
         "    try:\n"
         "        client.request('attach', pid=pid, name='rank', gpus=[1], phase='train')\n"
         "        print('attached', pid)\n"
         "    except RequestFailed as exc:\n"
         "        print(exc.code, exc)\n"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime_dir)},
    )  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.count("forbidden") == 2 and "attached" not in inside.stdout, inside.stdout
    assert "another PID namespace" in inside.stdout
    assert client.request("status")["processes"] == []
    crashed = fakehw("inject", "rank-crash", "--gpu", "1")
    assert crashed.returncode == 1 and alive(sleeper.pid)
    client.close()


def test_names_that_are_not_printable_text_are_refused(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A lone surrogate would break every view's output (it cannot be encoded), and
    escape sequences would be written to the terminal of whoever looks."""
    client = start_daemon("--gpus-per-node", "2")
    bad = [("name", "\ud800x"), ("user", "\udcffu"), ("name", "\x1b]0;owned\x07python"),
           ("name", "py\x1b[2Jthon")]  # fmt: skip
    for field, value in bad:
        request = {"id": 1, "op": "attach", "pid": sleeper.pid, "name": "python", "gpus": [1]}
        line = json.dumps({**request, field: value})  # \ud800 goes out as JSON spells it
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            raw.connect(str(runtime_dir / "daemon.sock"))
            raw.sendall(line.encode() + b"\n")
            answer = json.loads(raw.recv(65536))
        assert answer["ok"] is False and answer["error"]["code"] == "bad_request", answer
    assert client.request("status")["processes"] == []
    for argv in (["-m", "fakehw.smi"], ["-m", "fakehw.smi", "-q"], ["-m", "fakehw.gpustat",
                                                                       "-cpu"]):  # fmt: skip
        view = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert view.returncode == 0 and "Traceback" not in view.stderr, (argv, view.stderr)
        assert "\x1b" not in view.stdout
    client.close()
