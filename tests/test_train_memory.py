"""Memory pressure, read from the real output: a step that runs out of GPU memory is
caught by the batch-size manager, which halves the micro-batch and doubles gradient
accumulation (the global batch kept) or switches activation checkpointing on; the
log's memory, step time and MFU follow the new layout, and so do the GPUs' memory
as the daemon shows it. Another job on the GPUs at the start is met the same way.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LoggedRun, Records, TrainRuns, logged_runs

SPEED = ["--speed-factor", "100", "--gpus", "8", "--color", "never"]
GIB = r"([\d.]+) GiB"


Run = LoggedRun


def ooms(run: Run) -> list[dict[str, object]]:
    return [i for i in run.events("incident") if i["kind"] == "oom"]


Runs = TrainRuns[Run]


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    yield from logged_runs("fhw-mem-", *SPEED)


HALVED = ("--model", "Llama-3.2-1B", "--seed", "3", "--inject", "oom:3@20",
          "--exit-after-steps", "160")  # fmt: skip
# DeepSpeed ZeRO on Llama-3.1-8B runs at a micro-batch of one: recomputation is left
RECOMPUTED = ("--style", "deepspeed", "--model", "Llama-3.1-8B", "--seed", "1",
              "--inject", "oom:2@30", "--exit-after-steps", "80")  # fmt: skip


def test_an_oom_halves_the_micro_batch_and_keeps_the_global_batch(runs: Runs) -> None:
    run = runs(*HALVED)
    error = re.search(rf"\[rank3\]: torch\.OutOfMemoryError: CUDA out of memory\. Tried to "
                      rf"allocate {GIB}\. GPU 3 has a total capacity of {GIB} of which {GIB} is "
                      rf"free\. Including non-PyTorch memory, this process has {GIB} memory in "
                      rf"use\. Of the allocated memory {GIB} is allocated by PyTorch, and {GIB} "
                      r"is reserved by PyTorch but unallocated\.", run.stdout)  # fmt: skip
    assert error
    wanted, total, free, in_use, allocated, unallocated = (float(g) for g in error.groups())
    assert wanted > free and in_use + free == pytest.approx(total, abs=0.6)  # the context
    assert allocated + unallocated < in_use
    (oom,) = ooms(run)
    assert oom["micro_to"] * 2 == oom["micro_from"] and oom["accum_to"] == 2 * oom["accum_from"]  # type: ignore[operator]
    parallel = re.search(r"DP (\d+) · .* micro-batch (\d+) · grad-accum (\d+) · global batch "
                         r"(\d+) x (\d+)", run.stdout)  # fmt: skip
    assert parallel
    dp, micro, accum, batch, seq = (int(g) for g in parallel.groups())
    assert (micro, accum) == (oom["micro_from"], oom["accum_from"])
    assert dp * int(oom["micro_to"]) * int(oom["accum_to"]) == batch == oom["global_batch"]  # type: ignore[call-overload]
    assert {int(s["global_batch_tokens"]) for s in run.steps} == {batch * seq}  # type: ignore[call-overload]
    assert oom["reserved_to_gib"] < oom["reserved_from_gib"]  # type: ignore[operator]
    # the warning says what the manager did, in the numbers the record holds
    said = re.search(r"CUDA out of memory on rank 3 at step 21 \(a batch larger than planned\): "
                     r"micro-batch (\d+) → (\d+), grad-accum (\d+) → (\d+), global batch (\d+) x "
                     r"(\d+) kept · activations ([\d.]+) → ([\d.]+) GiB · ([\d.]+) → ([\d.]+) "
                     r"GiB reserved · ([\d.]+) → ([\d.]+) s/step; retrying the step",
                     run.stdout)  # fmt: skip
    assert said
    assert float(said[10]) == pytest.approx(oom["reserved_to_gib"], abs=0.05)
    # no step is lost: the failed step is tried again
    assert run.steps[-1]["step"] == 160


def test_the_gpus_hold_what_the_new_layout_reserves(runs: Runs) -> None:
    run = runs(*HALVED)
    (oom,) = ooms(run)
    # (their allocators take a second of wall time to fill: the last readings)
    after = [g for g in run.events("gpus") if int(g["step"]) >= 140]  # type: ignore[call-overload]
    assert after
    # the job's GPUs: their mean memory is the ranks' new reservation and their context
    reserved = float(oom["reserved_to_gib"])  # type: ignore[arg-type]
    assert float(after[-1]["memory_used_gib"]) == pytest.approx(reserved, rel=0.05, abs=0.6)  # type: ignore[arg-type]
    assert float(after[-1]["memory_used_gib"]) < float(oom["reserved_from_gib"]) - 5  # type: ignore[arg-type]


def test_at_a_micro_batch_of_one_activation_checkpointing_is_switched_on(runs: Runs) -> None:
    run = runs(*RECOMPUTED)
    assert "train_micro_batch_size_per_gpu  1" in run.stdout
    (oom,) = ooms(run)
    assert oom["recompute"] is True and oom["micro_to"] == oom["micro_from"] == 1
    # far less memory for a third more compute: the step is slower, MFU lower
    assert float(oom["activations_to_gib"]) < 0.5 * float(oom["activations_from_gib"])  # type: ignore[arg-type]
    assert oom["step_s_to"] > oom["step_s_from"]  # type: ignore[operator]
    before = [s for s in run.steps if int(s["step"]) <= 30]  # type: ignore[call-overload]
    later = [s for s in run.steps if int(s["step"]) >= 60]  # type: ignore[call-overload]
    assert before and later
    assert float(later[-1]["mfu"]) < float(before[-1]["mfu"])  # type: ignore[arg-type]
    assert "activation checkpointing on" in run.stdout  # the script's monitor, through log_dist


def test_another_job_on_a_gpu_is_met_with_a_smaller_micro_batch(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    from fakehw.service.client import Client

    with Client.connect() as client:  # another job holds 40 GB of GPU 3
        client.request("attach", pid=sleeper.pid, name="other-job", gpus=[3])
        client.request("set_phase", pid=sleeper.pid, phase="train", memory_mib=40000)
        deadline = time.monotonic() + 20  # its allocator takes the memory in a second or so
        while time.monotonic() < deadline and not any(
            p["used_memory_mib"] == 40000
            for p in client.request("snapshot")["nodes"][0]["processes"]
        ):
            time.sleep(0.1)
        out = tmp_path / "m.jsonl"
        result = subprocess.run(
            [sys.executable, "-m", "fakehw.train", "--gpus", "8", "--seed", "3", "--model",
             "Llama-3.2-1B", "--speed-factor", "1000", "--exit-after-steps", "20",
             "--metrics-jsonl", str(out)],
            capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Process {sleeper.pid} has 39.06 GiB memory in use." in result.stdout
    ooms = [i for i in Records(Records.read(out)).events("incident") if i["kind"] == "oom"]
    assert ooms and {i["cause"] for i in ooms} == {"another job on the GPU"}
    total = 81559 - 480  # an H100's memory less the driver's reservation
    assert float(ooms[-1]["reserved_to_gib"]) * 1024 <= total - 40000  # type: ignore[arg-type]
    assert "run stopped early" in result.stdout
