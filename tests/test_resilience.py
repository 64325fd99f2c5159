"""The daemon killed under running programs: they carry on, and so does the GPUs' state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import alive, fakehw, training, wait_for

from fakehw.service.client import Client


def daemon_pid(runtime: Path) -> int:
    return int((runtime / "daemon.pid").read_text())


def test_kill_9_the_daemon_under_fake_train_and_a_viewer(runtime_dir: Path, tmp_path: Path) -> None:
    train_out, viewer_out = tmp_path / "train.log", tmp_path / "smi.log"
    with training(train_out, speed_factor=5) as train:
        viewer = None
        try:
            viewer_file = open(viewer_out, "w")  # noqa: SIM115 - closed with the process
            viewer = subprocess.Popen(
                [sys.executable, "-m", "fakehw.smi", "--query-gpu=index,temperature.gpu",
                 "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=viewer_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
            wait_for(lambda: viewer_out.read_text().count("\n") >= 8, timeout=20)
            with Client.connect(autostart=False) as client:
                before = client.snapshot(0)["nodes"][0]
            ranks = {p["pid"] for p in before["processes"]}
            assert len(ranks) == 8
            first = daemon_pid(runtime_dir)
            train_lines = train_out.read_text().count("│ loss")
            viewer_lines = viewer_out.read_text().count("\n")
            killed_at = time.monotonic()
            os.kill(first, signal.SIGKILL)
            # within 2 s: a new daemon, the ranks attached again, both programs going on
            wait_for(lambda: (runtime_dir / "daemon.pid").exists() and daemon_pid(runtime_dir)
                     != first and alive(daemon_pid(runtime_dir)), timeout=5)  # fmt: skip

            def reattached() -> bool:
                with Client.connect(autostart=False) as client:
                    node = client.snapshot(0)["nodes"][0]
                return {p["pid"] for p in node["processes"]} == ranks

            wait_for(reattached, timeout=5)
            recovered_s = time.monotonic() - killed_at
            assert recovered_s < 2.5, recovered_s
            wait_for(lambda: viewer_out.read_text().count("\n") >= viewer_lines + 8, timeout=10)
            wait_for(lambda: train_out.read_text().count("│ loss") > train_lines, timeout=20)
            assert train.poll() is None and viewer.poll() is None
            # the GPUs' state carried over: energy counters never go back, heat is kept
            with Client.connect(autostart=False) as client:
                after = client.snapshot(0)["nodes"][0]
            for old, new in zip(before["gpus"], after["gpus"], strict=True):
                assert new["energy_mj"] >= old["energy_mj"]
                assert new["temperature_gpu_c"] >= old["temperature_gpu_c"] - 8
            assert min(g["temperature_gpu_c"] for g in after["gpus"]) > 50  # not a cold start
            assert "Traceback" not in train_out.read_text() + viewer_out.read_text()
        finally:
            if viewer is not None and viewer.poll() is None:
                viewer.send_signal(signal.SIGTERM)
                viewer.wait(timeout=20)


def test_state_survives_a_stop_and_start(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--gpus-per-node", "2").returncode == 0
    with Client.connect(autostart=False) as client:
        client.request("inject", gpu=1, fault="ecc", count=3)
        energy = client.snapshot(0)["nodes"][0]["gpus"][0]["energy_mj"]
    assert fakehw("daemon", "stop").returncode == 0
    assert fakehw("daemon", "start", "--gpus-per-node", "2").returncode == 0
    with Client.connect(autostart=False) as client:
        gpus = client.snapshot(0)["nodes"][0]["gpus"]
    assert gpus[1]["ecc"]["volatile_dram_corrected"] == 3
    assert gpus[0]["energy_mj"] >= energy
    # another cluster does not inherit it
    assert fakehw("daemon", "stop").returncode == 0
    assert fakehw("daemon", "start", "--gpus-per-node", "4").returncode == 0
    with Client.connect(autostart=False) as client:
        gpus = client.snapshot(0)["nodes"][0]["gpus"]
    assert gpus[1]["ecc"]["volatile_dram_corrected"] == 0


def test_fake_train_attaches_its_ranks_again_when_the_state_is_lost(
    runtime_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "train.log"
    with training(log, speed_factor=5) as train:
        with Client.connect(autostart=False) as client:
            ranks = {p["pid"] for p in client.snapshot(0)["nodes"][0]["processes"]}
        assert len(ranks) == 8
        first = daemon_pid(runtime_dir)
        os.kill(first, signal.SIGKILL)
        (runtime_dir / "state.npz").unlink(missing_ok=True)  # the new daemon starts afresh

        def attached() -> set[int]:
            if not (runtime_dir / "daemon.pid").exists() or daemon_pid(runtime_dir) == first:
                return set()
            with Client.connect(autostart=False) as client:
                return {p["pid"] for p in client.snapshot(0)["nodes"][0]["processes"]}

        assert wait_for(lambda: attached() == ranks, timeout=10)  # fake-train did it
        assert "state of the previous daemon" not in (runtime_dir / "daemon.log").read_text()
        steps = log.read_text().count("│ loss")
        wait_for(lambda: log.read_text().count("│ loss") > steps, timeout=20)
        assert train.poll() is None


def test_the_first_snapshot_after_a_kill_9_follows_on_from_the_last_one(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A restarted daemon serves, from its very first snapshot (before its first tick),
    a training GPU that still trains: not 0 %, 70 W, 345 MHz of a fresh start."""
    assert fakehw("daemon", "start", "--gpus-per-node", "2").returncode == 0
    with Client.connect(autostart=False) as client:
        client.request("attach", pid=sleeper.pid, name="python", gpus=[0], phase="train",
                       memory_plan={"train": 40000})  # fmt: skip
        wait_for(lambda: client.snapshot(0)["nodes"][0]["gpus"][0]["temperature_gpu_c"] > 60,
                 timeout=30)  # fmt: skip
        time.sleep(2.5)  # the periodic save has the warm GPU
        last = client.snapshot(0)["nodes"][0]["gpus"][0]
    killed = daemon_pid(runtime_dir)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not alive(killed))
    assert fakehw("daemon", "start", "--gpus-per-node", "2").returncode == 0
    with Client.connect(autostart=False) as client:
        first = client.snapshot(0)
        gpu = first["nodes"][0]["gpus"][0]
    assert gpu["utilization_gpu_pct"] == 100
    assert gpu["memory_used_mib"] == last["memory_used_mib"] == 40009
    assert abs(gpu["power_draw_mw"] - last["power_draw_mw"]) < 60_000
    assert abs(gpu["clock_sm_mhz"] - last["clock_sm_mhz"]) < 300
    assert abs(gpu["temperature_gpu_c"] - last["temperature_gpu_c"]) <= 3
    assert gpu["energy_mj"] >= last["energy_mj"]
    assert gpu["clocks_event_reasons"] & 0x4  # still held at the power cap
