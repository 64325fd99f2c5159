"""Fault injection: each fault as every view shows it, and fake-train's reaction."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Node, alive, wait_for


def inject(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakehw", "inject", *args], env=node.env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def query(node: Node, gpu: int, fields: str) -> list[str]:
    result = node.smi("-i", str(gpu), f"--query-gpu={fields}", "--format=csv,noheader,nounits")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(", ")


def scrape(node: Node) -> str:
    """One scrape of ``fakehw exporter`` on this node, as Prometheus would."""
    command = [sys.executable, "-m", "fakehw", "exporter", "--listen", "127.0.0.1:0"]
    exporter = subprocess.Popen(command, env=node.env, stdout=subprocess.PIPE, text=True)
    try:
        assert exporter.stdout is not None
        url = exporter.stdout.readline().split()[-1]  # "fakehw exporter: http://..."
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(response.read().decode())
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)


@pytest.fixture
def node() -> Iterator[Node]:
    node = Node("h100", 4).training_on({1: 40000, 2: 40000})
    yield node
    node.close()


def test_power_brake_drops_clocks_and_says_why(node: Node) -> None:
    before = int(query(node, 1, "clocks.sm")[0])
    result = inject(node, "power-brake", "--gpu", "1")
    assert result.returncode == 0, result.stderr
    assert "in force: power-brake" in result.stdout
    fields = "clocks.sm,clocks_event_reasons.hw_power_brake_slowdown,power.draw"
    braked = wait_for(
        lambda: (q := query(node, 1, fields)) and int(q[0]) < 600 and float(q[2]) < 450 and q,
        timeout=10,
    )  # slow clocks, little power (power.draw is a 1 s average: it follows)
    assert before > 1400 and braked[1] == "Active"
    assert query(node, 2, "clocks_event_reasons.hw_power_brake_slowdown") == ["Not Active"]
    inject(node, "clear", "--gpu", "1")
    wait_for(lambda: int(query(node, 1, "clocks.sm")[0]) > 1400, timeout=10)


def test_lost_cooling_heats_to_thermal_slowdown(node: Node) -> None:
    start = int(query(node, 2, "temperature.gpu")[0])
    assert inject(node, "thermal", "--gpu", "2").returncode == 0
    wait_for(lambda: int(query(node, 2, "temperature.gpu")[0]) >= start + 10, timeout=15)
    hot = wait_for(lambda: (q := query(node, 2, "temperature.gpu,clocks_event_reasons."
                                            "hw_thermal_slowdown,clocks.sm"))
                   and q[1] == "Active" and q, timeout=60)  # fmt: skip
    assert int(hot[0]) >= 85 and int(hot[2]) <= 1000  # near slowdown (89 C), clocks halved
    gpus = node.tool("fakehw.nvitop", "-1")
    assert re.search(r"│   2 .*\n│ N/A   (8\d|9\d|1\d\d)C ", gpus.stdout)
    gpustat = node.tool("fakehw.gpustat", "--no-color").stdout
    assert re.search(r"^\[2\] NVIDIA H100 80GB HBM3 \| (8\d|9\d)°C", gpustat, re.MULTILINE), gpustat
    script = """if True:
        import time
        import pynvml as N
        N.nvmlInit()
        handles = [N.nvmlDeviceGetHandleByIndex(i) for i in (1, 2)]
        deadline = time.monotonic() + 20  # it may let go for a moment before it settles
        while True:
            bits = [N.nvmlDeviceGetCurrentClocksEventReasons(h)
                    & N.nvmlClocksEventReasonHwThermalSlowdown for h in handles]
            if bits[1] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(*bits)
    """
    result = subprocess.run([sys.executable, "-m", "fakehw", "exec", "--", sys.executable, "-c",
                             script], env=node.env, capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.stdout.split() == ["0", "64"], result.stderr  # only GPU 2 is throttled
    metrics = scrape(node)
    temperature = re.search(r'^DCGM_FI_DEV_GPU_TEMP\{gpu="2",.*\} (\d+)', metrics, re.MULTILINE)
    assert temperature and int(temperature.group(1)) >= 84


def test_ecc_errors_are_counted_everywhere(node: Node) -> None:
    assert inject(node, "ecc", "--gpu", "0", "--count", "7").returncode == 0
    corrected = query(node, 0, "ecc.errors.corrected.volatile.total")
    assert corrected == ["7"]
    assert inject(node, "ecc-uncorrectable", "--gpu", "3").returncode == 0
    assert query(node, 3, "ecc.errors.uncorrected.volatile.total") == ["1"]
    details = node.smi("-q", "-i", "3", "-d", "ECC").stdout
    assert re.search(r"DRAM Uncorrectable\s+: 1", details)


def test_xid79_gpu_off_the_bus_in_every_view(node: Node) -> None:
    assert inject(node, "xid79", "--gpu", "1").returncode == 0
    table = node.smi()
    assert table.returncode == 15
    assert table.stdout.startswith("Unable to determine the device handle for GPU00000000:")
    assert "GPU is lost.  Reboot the system to recover this GPU" in table.stdout
    assert node.smi("-i", "0", "-L").returncode == 0  # the others still answer
    gpustat = node.tool("fakehw.gpustat")
    assert re.search(r"\[1\] \(\(GPU is lost\)\) +\| +\?°C, +\? % \| +\? / +\? MB \| "
                     r"\(Not Supported\)", gpustat.stdout), gpustat.stdout  # fmt: skip
    nvitop = node.tool("fakehw.nvitop", "-1").stdout
    assert re.search(r"│   1  ERROR: GPU is lost +N/A │", nvitop), nvitop
    grid = node.tool("fakehw.nvitop", "--cluster", "-1").stdout
    assert "LOST 1" in grid and "  LOST " in grid
    script = ("import pynvml as N\nN.nvmlInit()\n"
              "try:\n    N.nvmlDeviceGetHandleByIndex(1)\nexcept N.NVMLError as e:\n"
              "    print(type(e).__name__)\nprint(N.nvmlDeviceGetCount())\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "fakehw", "exec", "--", sys.executable, "-c",
                             script], env=node.env, capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.stdout.split() == ["NVMLError_GpuIsLost", "4"], result.stderr
    metrics = scrape(node)  # the exporter: the lost GPU reports its last XID and nothing else
    assert re.search(r'^DCGM_FI_DEV_XID_ERRORS\{gpu="1",.*\} 79(\.0)?$', metrics, re.MULTILINE)
    assert not re.search(r'^DCGM_FI_DEV_GPU_TEMP\{gpu="1",', metrics, re.MULTILINE)
    assert re.search(r'^DCGM_FI_DEV_GPU_TEMP\{gpu="0",', metrics, re.MULTILINE)
    assert inject(node, "clear", "--gpu", "1").returncode == 0
    assert node.smi().returncode == 0


def test_rank_crash_kills_the_process_on_the_gpu(node: Node) -> None:
    victim = node.children[0].pid
    result = inject(node, "rank-crash", "--gpu", "1")
    assert result.returncode == 0 and str(victim) in result.stdout
    wait_for(lambda: not alive(victim), timeout=5)

    def listed() -> str:
        return node.smi("--query-compute-apps=pid", "--format=csv,noheader").stdout

    wait_for(lambda: str(victim) not in listed(), timeout=5)  # the driver freed its memory


def test_bad_injections_are_explained(node: Node) -> None:
    assert inject(node, "meltdown").returncode == 2
    missing = inject(node, "thermal", "--gpu", "9")
    assert missing.returncode == 2 and "GPU 9 does not exist" in missing.stderr
    nobody = inject(node, "rank-crash", "--gpu", "3")
    assert nobody.returncode == 1 and "no process runs on GPU 3" in nobody.stderr


# ---------------------------------------------------------------- fake-train
def fake_train(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list]:  # type: ignore[type-arg]
    metrics = tmp_path / "m.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.train", "--gpus", "8", "--model", "Llama-3.2-1B",
         "--seed", "4", "--metrics-jsonl", str(metrics), *args],
        capture_output=True, text=True, timeout=180, check=False, env=dict(os.environ),
    )  # fmt: skip
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if (
        metrics.exists()) else []  # fmt: skip
    return result, records


def test_train_survives_an_uncorrectable_ecc_error(tmp_path: Path) -> None:
    result, _ = fake_train(tmp_path, "--speed-factor", "20", "--exit-after-steps", "40",
                           "--inject", "ecc-uncorrectable:2@12")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[rank2]: RuntimeError: CUDA error: uncorrectable ECC error encountered" in result.stdout
    assert "Worker group FAILED. 3/3 attempts left" in result.stdout
    assert "restarted worker group (1/3)" in result.stdout


def test_train_fails_when_a_gpu_falls_off_the_bus(tmp_path: Path) -> None:
    result, _ = fake_train(tmp_path, "--speed-factor", "20", "--exit-after-steps", "60",
                           "--inject", "xid79:5@10")  # fmt: skip
    assert result.returncode == 1
    assert "[rank5]: RuntimeError: CUDA error: unspecified launch failure" in result.stdout
    assert "GPU 5 fell off the bus: XID 79; the node needs a reboot" in result.stdout
    assert "Traceback (most recent call last):\n  File" not in result.stderr  # not ours


def test_train_slows_down_under_a_power_brake(tmp_path: Path) -> None:
    result, records = fake_train(tmp_path, "--speed-factor", "10", "--exit-after-steps", "40",
                                 "--inject", "power-brake:3@15")  # fmt: skip
    assert result.returncode == 0, result.stderr
    steps = [r for r in records if "event" not in r]
    before = [r["tokens_per_s"] for r in steps if 5 <= r["step"] < 15]
    after = [r["tokens_per_s"] for r in steps if r["step"] >= 25]
    assert before and after
    # the braked GPU's clock holds the synchronous job back
    assert max(after) < 0.5 * min(before)


def test_inject_option_is_checked(tmp_path: Path) -> None:
    result, _ = fake_train(tmp_path, "--inject", "fire:1@3")
    assert result.returncode == 2 and "FAULT[:GPU]@STEP" in result.stderr
    result, _ = fake_train(tmp_path, "--inject", "thermal:9@3")
    assert result.returncode == 2 and "GPUs 0-7" in result.stderr
