"""Attacks on the daemon's state and on other people's processes (issue 12).

A refused request changes nothing; a daemon that breaks goes down loudly; a
signal goes only to a process provably attached as itself (PID and start time).
"""

from __future__ import annotations

import json
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

from fakehw.client import Client, RequestFailed


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
_names = st.sampled_from(["train", "eval", "context", "free", "dance", "", "TRAIN", "idle"])
_gpu_lists = st.one_of(
    st.lists(st.integers(-2, 9), min_size=0, max_size=4),
    st.just([0, 0]),
    st.just(["0"]),
)
_mib = st.one_of(st.none(), st.integers(-5, 200_000), st.floats(-1, 1e6), st.text(max_size=3))
_plans = st.one_of(
    st.none(),
    st.dictionaries(_names, _mib, max_size=3),
    st.just([1, 2]),
    st.just({"train": True}),
)


def _requests(live_pid: int, other_pid: int) -> st.SearchStrategy[dict[str, Any]]:
    pids = st.sampled_from([live_pid, other_pid, 1, 999_999_999, -3, 0])
    attach = st.fixed_dictionaries(
        {"op": st.just("attach"), "pid": pids, "name": st.sampled_from(["p", "", "x" * 300]),
         "gpus": _gpu_lists},
        optional={"phase": _names, "memory_plan": _plans, "watch_pid": pids,
                  "user": st.sampled_from(["u", "", 5]), "job": st.sampled_from(["j", 7])},
    )  # fmt: skip
    set_phase = st.fixed_dictionaries(
        {"op": st.just("set_phase"), "pid": pids, "phase": _names},
        optional={"memory_mib": _mib, "cycle_s": _mib, "intensity": _mib},
    )
    detach = st.fixed_dictionaries({"op": st.just("detach"), "pid": pids})
    inject = st.fixed_dictionaries(
        {"op": st.just("inject"), "gpu": st.integers(-1, 9),
         "fault": st.sampled_from(["thermal", "ecc", "meltdown", "", "clear", "rank-crash"])},
        optional={"count": _mib},
    )  # fmt: skip
    return st.one_of(attach, set_phase, detach, inject)


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
        for request in data.draw(st.lists(_requests(job.pid, bystander.pid), max_size=6)):
            if request.get("fault") == "rank-crash":
                request["gpu"] = 3  # never a GPU the sleepers may be attached to ...
            elif request["op"] == "attach" and isinstance(request["gpus"], list):
                request["gpus"] = [2 if gpu == 3 else gpu for gpu in request["gpus"]]
            before = cluster_view(client)
            try:
                client.request(**request)
            except RequestFailed as refused:
                assert refused.code in ("bad_request", "not_found", "conflict", "out_of_memory")
                assert cluster_view(client) == before, request
        assert client.request("status")["daemon_pid"] == daemon_pid
    assert alive(job.pid) and alive(bystander.pid)  # ... and no one was signalled
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
from fakehw.cli import main
sys.exit(main(["daemon", "run", "--runtime-dir", sys.argv[1]]))
"""


@pytest.mark.parametrize(
    ("module", "cls", "method", "after"),
    [("devices", "Cluster", "step", 10), ("daemon", "Daemon", "_watch_pids", 3)],
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


def test_rank_crash_kills_a_local_rank_after_checking_it_is_the_same_process(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
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


def _rewrite_saved_start_time(state_file: Path, pid: int, shift_s: float) -> None:
    """Make the saved record of ``pid`` say its process started ``shift_s`` earlier:
    what the saved state holds when the PID has since been given to another program."""
    with np.load(state_file) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    for process in meta["processes"]:
        if process["pid"] == pid:
            process["watch_started"] -= shift_s
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(state_file, "wb") as handle:
        np.savez(handle, **arrays)
    assert zipfile.is_zipfile(state_file)


def test_a_pid_reused_across_a_daemon_restart_is_not_restored_nor_signalled(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    client = start_daemon("--gpus-per-node", "2")
    client.request("attach", pid=sleeper.pid, name="python", gpus=[1], phase="train",
                   memory_plan={"train": 30000})  # fmt: skip
    client.close()
    assert fakehw("daemon", "stop").returncode == 0
    _rewrite_saved_start_time(runtime_dir / "state.npz", sleeper.pid, shift_s=3600)
    client = start_daemon("--gpus-per-node", "2")
    node = client.snapshot(0)["nodes"][0]
    assert node["processes"] == [] and node["gpus"][1]["memory_used_mib"] == 0
    assert "is now another program: detached" in log_text(runtime_dir)
    crashed = fakehw("inject", "rank-crash", "--gpu", "1")
    assert crashed.returncode == 1 and "no process runs on GPU 1" in crashed.stderr
    assert alive(sleeper.pid)
    client.close()


def test_a_process_still_alive_across_a_restart_is_restored(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    client = start_daemon("--gpus-per-node", "2")
    client.request("attach", pid=sleeper.pid, name="python", gpus=[1], phase="train",
                   memory_plan={"train": 30000})  # fmt: skip
    wait_for(lambda: client.snapshot(0)["nodes"][0]["gpus"][1]["memory_used_mib"] == 30009)
    client.close()
    assert fakehw("daemon", "stop").returncode == 0
    client = start_daemon("--gpus-per-node", "2")
    node = client.snapshot(0)["nodes"][0]
    assert [p["pid"] for p in node["processes"]] == [sleeper.pid]
    assert node["gpus"][1]["memory_used_mib"] == 30009
    client.close()
