"""fake-train when things go wrong around it: Ctrl-C during a save, closed output,
faults that outlive a run, ranks of other nodes that vanish. Real runs against a
real daemon (Ctrl-C through tmux, as a terminal sends it), read back as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import alive, fakehw, wait_for

from fakehw.service.client import Client, DaemonUnavailable
from fakehw.specs import lookup
from fakehw.train.plan import make_plan

SMALL = ["--gpus", "8", "--model", "Llama-3.2-1B", "--speed-factor", "20", "--seed", "3"]
# An 8B model's checkpoint takes ~3.5 s of real time at --speed-factor 20: time to press Ctrl-C.
SLOW_SAVE = ["--gpus", "8", "--model", "Llama-3.1-8B", "--speed-factor", "20", "--seed", "1"]


def start_train(
    *args: str, output: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(output, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "fakehw.train", "--color", "never", *args],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def processes() -> list[dict[str, Any]]:
    """The processes the daemon holds on its GPUs (none if no daemon runs)."""
    status = json.loads(fakehw("daemon", "status", "--json").stdout or "{}")
    return list(status.get("processes", []))


def gpus() -> list[Any]:
    """Node 0's GPU records, from the daemon."""
    with Client.connect(autostart=False) as client:
        return list(client.snapshot(0)["nodes"][0]["gpus"])


def faults() -> dict[int, list[str]]:
    """GPU -> the faults in force on it, as the daemon reports them (none if none runs)."""
    try:
        return {g["index"]: g["faults"] for g in gpus()}
    except DaemonUnavailable:
        return {}


# ------------------------------------------------------------ Ctrl-C in a save
def type_in_pane(tmux, *args: str) -> None:  # type: ignore[no-untyped-def]
    command = f"{sys.executable} -m fakehw.train {' '.join(args)}; echo EXIT=$?"
    tmux("send-keys", "-t", "t", command, "Enter")


def history(tmux) -> str:  # type: ignore[no-untyped-def]
    return str(tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t"))


def exit_code(tmux) -> int:  # type: ignore[no-untyped-def]
    found = wait_for(lambda: re.search(r"EXIT=(\d+)$", history(tmux), re.MULTILINE), timeout=90)
    return int(found.group(1))


def test_ctrl_c_during_the_final_save_lets_it_finish_and_saves_nothing_twice(tmux) -> None:  # type: ignore[no-untyped-def]
    type_in_pane(tmux, *SLOW_SAVE, "--exit-after-steps", "3")
    wait_for(lambda: "saving step 3 (final)" in history(tmux), timeout=90)
    tmux("send-keys", "-t", "t", "C-c")
    assert exit_code(tmux) == 130
    text = history(tmux)
    assert "interrupted: letting the checkpoint of step 3 finish, then exiting" in text
    assert text.count("saving step 3") == 1  # no second save of the same step
    assert re.search(r"checkpoint +saved 104\.7 GiB", text)
    assert re.search(r"run interrupted: 3 of [\d,]+ steps", text)
    assert not re.search(r"\] export ", text) and "Traceback" not in text  # nothing exported
    assert tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"
    wait_for(lambda: not processes(), timeout=15)


@pytest.mark.parametrize("save", ["final", "interrupted"])
def test_ctrl_c_twice_abandons_the_save_and_names_the_last_complete_checkpoint(  # type: ignore[no-untyped-def]
    tmux, save: str
) -> None:
    # Resumed at a step: that checkpoint is the last complete one.
    limit = ["--exit-after-steps", "3"] if save == "final" else []
    type_in_pane(tmux, *SLOW_SAVE, "--resume", *limit)
    if save == "final":
        wait_for(lambda: "(final) to" in history(tmux), timeout=90)
    else:
        wait_for(lambda: "│ loss" in history(tmux), timeout=90)
    ranks = [p["pid"] for p in processes()]
    assert len(ranks) == 8
    tmux("send-keys", "-t", "t", "C-c")  # finds the final save under way, or starts one
    told = "letting the checkpoint" if save == "final" else "saving step"
    wait_for(lambda: f"({save}) to" in history(tmux) and told in history(tmux), timeout=30)
    tmux("send-keys", "-t", "t", "C-c")  # and the second one abandons it
    assert exit_code(tmux) == 130
    text = history(tmux)
    resumed = re.search(r"loaded (\S+/step_\d+) \(step ([\d,]+),", text)
    assert resumed
    saving = re.search(rf"saving step (\d+) \({save}\) to (\S+) \.\.\.", text)
    assert saving
    step = int(saving.group(1))
    assert (
        f"Ctrl-C again: abandoned the checkpoint of step {step:,}; {saving.group(2)} is "
        "incomplete" in text
    )
    assert f"the last complete checkpoint is {resumed.group(1)} (step {resumed.group(2)})" in text
    assert not re.search(r"checkpoint +saved", text) and "Traceback" not in text
    assert tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"
    # the ranks are gone and the GPUs free
    wait_for(lambda: not processes(), timeout=15)
    assert not any(alive(pid) for pid in ranks)


def test_a_rank_lost_during_the_final_save_restarts_the_job(tmp_path: Path) -> None:
    output = tmp_path / "out"
    process = start_train(*SLOW_SAVE, "--exit-after-steps", "3", output=output)
    try:
        wait_for(lambda: "saving step 3 (final)" in output.read_text(), timeout=90)
        (victim,) = [rank for rank in psutil.Process(process.pid).children()
                     if rank.environ().get("LOCAL_RANK") == "2"]  # fmt: skip
        victim.kill()
        assert process.wait(timeout=90) == 0
    finally:
        stop(process)
    text = output.read_text()
    assert f"failed (exitcode: -9) local_rank: 2 (pid: {victim.pid})" in text
    assert "restarted worker group (1/3); resuming from step 0" in text
    assert "Traceback" not in text and "run stopped early (--exit-after-steps 3)" in text


# --------------------------------------------------------------- closed output
@pytest.mark.parametrize(
    ("redirection", "told_on"),
    [(">&-", "stderr"), ("2>&-", "stdout")],
    ids=["stdout closed", "stderr closed"],
)
def test_closed_output_is_refused_and_starts_nothing(
    redirection: str, told_on: str, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = (f"exec {sys.executable} -m fakehw.train {' '.join(SMALL)} --exit-after-steps 3 "
               f"{redirection}")  # fmt: skip
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TMPDIR": str(scratch)}, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    told = getattr(result, told_on)  # the one still open
    assert re.fullmatch(r"fake-train: standard (output|error) is closed: .*\n", told)
    # nothing was left behind: no daemon started, no rank, no scratch directory
    assert json.loads(fakehw("daemon", "status", "--json").stdout)["running"] is False
    assert list(scratch.iterdir()) == []


# ------------------------------------------------------------------- faults
ENDINGS = {
    # how the run ends: (extra arguments, exit code)
    "normal end": (["--exit-after-steps", "8"], 0),
    "ctrl-c": ([], 130),
    "sigterm": ([], 143),
    "job failure": (["--inject", "xid79:4@5", "--exit-after-steps", "60"], 1),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_faults_a_run_injected_are_cleared_however_it_ends(ending: str, tmp_path: Path) -> None:
    extra, code = ENDINGS[ending]
    output = tmp_path / "out"
    process = start_train(*SMALL, "--inject", "thermal:5@3", "--inject", "power-brake:2@3",
                          *extra, output=output)  # fmt: skip
    try:
        if ending in ("ctrl-c", "sigterm"):
            injected = {2: ["power-brake"], 5: ["thermal"]}
            wait_for(lambda: faults().items() >= injected.items(), timeout=90, interval=0.2)
            process.send_signal(signal.SIGINT if ending == "ctrl-c" else signal.SIGTERM)
        assert process.wait(timeout=120) == code, output.read_text()[-2000:]
    finally:
        stop(process)
    if ending == "job failure":
        assert "GPU 4 fell off the bus" in output.read_text()
    records = gpus()
    assert [g["faults"] for g in records] == [[]] * 8
    assert not any(g["lost"] for g in records)


def test_a_fault_from_outside_stays_and_the_next_run_reports_it(tmp_path: Path) -> None:
    started = fakehw("daemon", "start", "--gpu-model", "h100", "--gpus-per-node", "8")
    assert started.returncode == 0, started.stderr
    for fault, gpu in (("power-brake", "3"), ("thermal", "5")):
        injected = fakehw("inject", fault, "--gpu", gpu)
        assert injected.returncode == 0, injected.stderr
    metrics = tmp_path / "m.jsonl"
    # The run injects a fault of its own on GPU 5 too: only that one goes at its end.
    result = subprocess.run(
        # at speed 5 a step lasts half a second: the readings of the training phase are in
        # by step 5 even on a loaded machine (at 20, a busy daemon's were not)
        [sys.executable, "-m", "fakehw.train", *SMALL, "--speed-factor", "5",
         "--exit-after-steps", "15", "--inject", "power-brake:5@3", "--metrics-jsonl",
         str(metrics)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "6/8 healthy: NVIDIA H100 80GB HBM3" in result.stdout
    assert re.search(r"gpus +GPU 3: HW power brake \(SM clock \d+ MHz\)", result.stdout)
    assert re.search(r"gpus +GPU 5: (cooling failure|thermal slowdown) .*\d+ C", result.stdout)
    # the braked GPU holds the synchronous job back from the first steps on
    plan = make_plan(seed=3, task="pretrain", style="default", gpu=lookup("h100"), nodes=1,
                     gpus_per_node=8, model="Llama-3.2-1B")  # fmt: skip
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in steps if "event" not in r and r["step"] >= 5]
    assert steps and all(r["mfu"] < 0.5 * plan.mfu for r in steps)
    assert faults() == {0: [], 1: [], 2: [], 3: ["power-brake"], 4: [], 5: ["thermal"], 6: [],
                        7: []}  # fmt: skip


def test_a_gpu_off_the_bus_from_outside_fails_the_next_run_at_its_start() -> None:
    started = fakehw("daemon", "start", "--gpu-model", "h100", "--gpus-per-node", "8")
    assert started.returncode == 0, started.stderr
    assert fakehw("inject", "xid79", "--gpu", "5").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.train", *SMALL, "--exit-after-steps", "5"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "7/8 healthy" in result.stdout and "GPU 5: fallen off the bus (XID 79)" in result.stdout
    assert "[rank5]: RuntimeError: CUDA error: unknown error" in result.stdout
    assert "GPU 5 fell off the bus: XID 79; the node needs a reboot" in result.stdout
    assert "│ loss" not in result.stdout  # no training on a GPU the driver cannot reach
    assert not processes()
    assert faults()[5] == ["xid79"]  # a fault from outside stays


# ------------------------------------------------------------ remote ranks
def test_a_remote_rank_whose_record_vanishes_makes_the_job_restart(tmp_path: Path) -> None:
    output = tmp_path / "out"
    process = start_train("--gpus", "16", "--model", "Llama-3.2-1B", "--speed-factor", "20",
                          "--seed", "3", output=output)  # fmt: skip
    try:
        wait_for(lambda: "│ loss" in output.read_text(), timeout=90)
        with Client.connect(autostart=False) as client:
            node1 = client.snapshot(1)["nodes"][0]
            (victim,) = [p["pid"] for p in node1["processes"] if p["gpu_index"] == 3]
            # what `fakehw inject rank-crash --gpu 3 --node 1` does to a rank of another node
            client.request("detach", pid=victim)
        text = wait_for(
            lambda: (t := output.read_text()) and "resuming from step" in t and t, timeout=60
        )
        # this node's ranks hang in the collective until NCCL's watchdog aborts them
        assert "Watchdog caught collective operation timeout" in text
        assert "failed (exitcode: -6) local_rank: 0 (pid: " in text
        assert "local_rank: 11" not in text  # a local rank is one of this node's 8
        assert "Worker group FAILED. 3/3 attempts left" in text
        # the restarted group has a rank on that GPU again, and training goes on
        with Client.connect(autostart=False) as client:
            node1 = client.snapshot(1)["nodes"][0]
            assert [p["gpu_index"] for p in node1["processes"]] == list(range(8))
        after = text.index("resuming from step")
        wait_for(lambda: "│ loss" in output.read_text()[after:], timeout=60)
        assert process.poll() is None
    finally:
        stop(process)
