"""fake-train end to end: real runs against a real daemon, read back as a user would."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import alive, fakehw, run_program, wait_for

from fakehw.specs import lookup
from fakehw.train import arithmetic as ar
from fakehw.train.plan import make_plan

FAST = ["--gpus", "8", "--model", "Llama-3.2-1B"]
ESCAPE = "\x1b"


def fake_train(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_program("fake-train", *args, timeout=timeout)


def start_train(*args: str, output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "fakehw.train", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def smi(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.smi", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def compute_apps() -> dict[int, int]:
    """pid -> used MiB, from fake-nvidia-smi --query-compute-apps."""
    text = smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    apps = {}
    for line in text.splitlines():
        if line.strip():
            pid, used = (int(v) for v in line.split(", "))
            apps[pid] = used
    return apps


def rank_children(process: subprocess.Popen[bytes]) -> list[int]:
    return [c.pid for c in psutil.Process(process.pid).children() if alive(c.pid)]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


# ----------------------------------------------------------------- listings
def test_list_models_and_styles() -> None:
    models = fake_train("--list-models")
    assert models.returncode == 0
    assert "Llama-3.1-8B" in models.stdout and "parody of" in models.stdout
    assert re.search(r"Mixtral-8x7B-v0.1\s+46\.70B\s+12\.88B", models.stdout)
    styles = fake_train("--list-styles")
    assert styles.returncode == 0
    for name in ("default", "megatron", "hf", "deepspeed"):
        assert re.search(rf"^{name}\s+\S", styles.stdout, re.MULTILINE), name


def test_help_explains_the_options() -> None:
    result = fake_train("--help")
    assert result.returncode == 0
    for option in ("--gpus", "--nodes", "--gpu-model", "--model", "--task", "--style", "--seed",
                   "--speed-factor", "--exit-after-time", "--exit-after-steps",
                   "--metrics-jsonl", "--list-models", "--list-styles"):  # fmt: skip
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "12"], "not a whole number of 8-GPU nodes"),
        (["--gpus", "8", "--nodes", "3"], "cannot be split evenly"),
        (["--speed-factor", "0"], "speed factor"),
        (["--exit-after-time", "soon"], "not a duration"),
        (["--gpu-model", "rtx9090"], "rtx9090"),
        (["--model", "GPT-7"], "unknown model"),
        (["--task", "rlhf"], "invalid choice"),
        (["--gpus", "1", "--gpu-model", "a100-40gb", "--model", "Llama-3.1-70B"], "does not fit"),
    ],
)
def test_bad_arguments_give_a_clear_error(args: list[str], message: str) -> None:
    result = fake_train(*args, "--exit-after-steps", "1")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_file_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    result = fake_train(*FAST, "--metrics-jsonl", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert result.returncode == 2
    assert "--metrics-jsonl" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------- consistency
def test_metrics_obey_the_training_arithmetic(tmp_path: Path) -> None:
    """The consistency test of the issue: every relation, on every logged step."""
    metrics = tmp_path / "m.jsonl"
    seed = 11
    result = fake_train(*FAST, "--seed", str(seed), "--speed-factor", "300",
                        "--exit-after-steps", "1000", "--metrics-jsonl", str(metrics))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ESCAPE not in result.stdout  # a pipe gets no colour or cursor codes
    plan = make_plan(seed=seed, task="pretrain", style="default", gpu=lookup("h100"), nodes=1,
                     gpus_per_node=8, model="Llama-3.2-1B")  # fmt: skip
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if "event" not in r]
    evals = [r for r in records if r.get("event") == "eval"]
    checkpoints = [r for r in records if r.get("event") == "checkpoint"]
    assert len(steps) >= 15
    peak = lookup("h100").bf16_dense_tflops
    for r in steps:
        assert r["tokens_per_s"] * r["step_time_s"] == pytest.approx(r["global_batch_tokens"])
        assert r["global_batch_tokens"] == plan.tokens_per_step
        assert r["tokens_seen"] == r["step"] * r["global_batch_tokens"]
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]))
        assert r["params"] == plan.active_params == 1_235_814_400
        assert r["tflops_per_gpu"] == pytest.approx(
            6 * r["params"] * r["tokens_per_s"] / r["gpus"] / 1e12
        )
        # the step's time is its compute, its exposed communication and the optimizer
        assert 0 < r["compute_s"] < r["step_time_s"] and r["exposed_comm_s"] >= 0
        assert r["compute_s"] + r["exposed_comm_s"] <= r["step_time_s"]
        assert r["bubble_fraction"] == 0.0  # no pipeline here
        assert r["mfu"] == pytest.approx(r["tflops_per_gpu"] / peak)
        assert 0.2 < r["mfu"] < 0.6
        assert r["samples_per_s"] == pytest.approx(r["tokens_per_s"] / plan.seq)
        expected_lr = ar.learning_rate(r["step"], plan.total_steps, plan.warmup_steps,
                                       plan.peak_lr, plan.schedule)  # fmt: skip
        assert r["lr"] == pytest.approx(expected_lr)
        assert r["gpus"] == 8
        assert r["eta_s"] > 0
    assert [r["step"] for r in steps] == sorted({r["step"] for r in steps})
    assert [r["elapsed_s"] for r in steps] == sorted(r["elapsed_s"] for r in steps)
    # the loss falls (warm-up of a fresh model), ppl with it
    assert steps[-1]["loss"] < steps[0]["loss"] - 1.0
    # evaluations land on the eval interval; a final checkpoint closes the run
    periodic = [e for e in evals if not e["final"]]
    assert periodic and all(e["step"] % plan.eval_every == 0 for e in periodic)
    assert evals[-1]["final"] and evals[-1]["step"] == 1000  # the trained model's evaluation
    # validation is forward only: about three times training's rate
    rate = statistics.median(r["tokens_per_s"] for r in steps)
    assert all(2.4 * rate < e["tokens_per_s"] < 3.3 * rate for e in evals)
    assert all(e["ppl"] == pytest.approx(math.exp(e["loss"])) for e in evals)
    assert checkpoints[-1]["step"] == 1000 and checkpoints[-1]["reason"] == "final"
    for c in checkpoints:
        # bf16 weights + fp32 Adam states, plus the files' headers and the trainer's state
        assert 14 * plan.params < c["bytes"] < 14 * plan.params + 2**20
        assert c["path"].startswith(plan.save_dir)
    # the summary agrees
    assert (f"run stopped early (--exit-after-steps 1000): 1,000 of {plan.total_steps:,} steps"
            in result.stdout)  # fmt: skip
    assert f"stopping early at step 1,000 of {plan.total_steps:,}" in result.stdout
    assert f"{steps[-1]['loss']:.4f}" in result.stdout


def test_the_seed_makes_the_run_repeatable() -> None:
    runs = [fake_train(*FAST, "--seed", "5", "--speed-factor", "500", "--exit-after-steps", "60")
            for _ in range(2)]  # fmt: skip
    losses = [re.findall(r"loss (\d+\.\d+)", run.stdout) for run in runs]
    assert losses[0] and losses[0] == losses[1]
    assert "seed 5" in runs[0].stdout


@pytest.mark.parametrize("style", ["megatron", "hf", "deepspeed"])
def test_each_style_plays_a_whole_run(style: str, tmp_path: Path) -> None:
    result = fake_train(*FAST, "--style", style, "--seed", "4", "--speed-factor", "400",
                        "--exit-after-steps", "500")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ESCAPE not in out
    # the Trainer's runs set no NCCL_DEBUG: no NCCL lines, tqdm on stderr
    assert ("NCCL INFO ncclCommInitRankConfig" in out) == (style != "hf")
    pattern = {
        "megatron": r"^ \[\S+ \S+\] iteration +\d+/ +\d+ \| consumed samples:",
        "hf": r"^\{'loss': '[\d.e-]+', 'grad_norm': '[\d.e-]+', 'learning_rate': '[\d.e-]+', "
        r"'epoch': '[\d.]+'\}$",
        "deepspeed": r"^\[\S+ \S+\] \[INFO\] \[logging\.py:96:log_dist\] \[Rank 0\] step=\d+",
    }[style]
    assert len(re.findall(pattern, out, re.MULTILINE)) >= 5
    eval_mark = {"megatron": "validation loss at iteration", "hf": "'eval_loss'",
                 "deepspeed": "validation loss at iteration"}[style]  # fmt: skip
    assert eval_mark in out
    assert "|hellaswag|" in out and "|gsm8k" in out  # lm-eval-harness table


def test_tasks_lora_dpo_and_moe() -> None:
    lora = fake_train("--task", "lora", "--model", "Qwen3-4B", "--gpus", "8", "--seed", "2",
                      "--speed-factor", "500", "--exit-after-steps", "40")  # fmt: skip
    assert lora.returncode == 0, lora.stderr
    assert re.search(r"rank \d+ · alpha \d+ .* trainable [\d,]+ of 4,022,468,096 \(\d\.\d+%\)",
                     lora.stdout)  # fmt: skip
    assert "adapter_model.safetensors" not in lora.stderr
    dpo = fake_train("--task", "dpo", "--gpus", "8", "--seed", "2", "--speed-factor", "500",
                     "--exit-after-steps", "30")  # fmt: skip
    assert dpo.returncode == 0, dpo.stderr
    assert "rewards/margins" in dpo.stdout


def test_moe_reports_active_parameters(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    moe = fake_train("--metrics-jsonl", str(metrics), "--model", "Mixtral-8x7B-v0.1",
                     "--nodes", "2", "--seed", "2", "--speed-factor", "500",
                     "--exit-after-steps", "20")  # fmt: skip
    assert moe.returncode == 0, moe.stderr
    assert "8 experts, top-2" in moe.stdout and "12,879,925,248 active per token" in moe.stdout
    first = json.loads(metrics.read_text().splitlines()[0])
    assert first["params"] == 12_879_925_248  # FLOPs follow the active parameters


def test_resume_starts_from_a_checkpoint(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    result = fake_train(*FAST, "--resume", "--seed", "8", "--speed-factor", "500",
                        "--exit-after-steps", "30", "--metrics-jsonl", str(metrics))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"loaded \S+ \(step [\d,]+, [\d.]+ GiB\): model, optimizer", result.stdout)
    first = json.loads(metrics.read_text().splitlines()[0])
    assert first["step"] > 1000
    assert first["loss"] < 4.5  # a trained model's loss, not a fresh one's


# ------------------------------------------------------- the world it drives
def test_ranks_are_real_processes_the_viewers_show(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    process = start_train(*FAST, "--seed", "3", "--speed-factor", "10",
                          "--metrics-jsonl", str(metrics), output=tmp_path / "out")  # fmt: skip
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().strip(), timeout=60)
        children = rank_children(process)
        assert len(children) == 8
        plan = make_plan(seed=3, task="pretrain", style="default", gpu=lookup("h100"), nodes=1,
                         gpus_per_node=8, model="Llama-3.2-1B")  # fmt: skip
        wait_for(lambda: set(compute_apps()) == set(children), timeout=10)
        # once the caching allocator has grown, each rank holds its plan's memory
        wait_for(lambda: set(compute_apps().values()) == {plan.memory_mib}, timeout=30)
        busy = smi("--query-gpu=utilization.gpu", "--format=csv,noheader,nounits")
        assert [int(v) for v in busy.split()] == [100] * 8 or "100" in busy
    finally:
        stop(process)
    # the launcher gone, its ranks leave and the GPUs are freed
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)
    wait_for(lambda: not compute_apps(), timeout=10)


def test_killing_a_rank_makes_the_job_fail_and_restart(tmp_path: Path) -> None:
    output = tmp_path / "out"
    process = start_train(*FAST, "--seed", "3", "--speed-factor", "20", output=output)
    try:
        wait_for(lambda: "│ loss" in output.read_text(), timeout=60)
        children = rank_children(process)
        victim = children[3]
        os.kill(victim, signal.SIGKILL)
        text = wait_for(
            lambda: (t := output.read_text()) and "resuming from step" in t and t, timeout=60
        )
        # torchrun's own monitor sees its worker die (no 10-minute watchdog for that)
        assert "Watchdog caught collective operation timeout" not in text
        assert f"failed (exitcode: -9) local_rank: 3 (pid: {victim})" in text
        assert "Worker group FAILED. 3/3 attempts left" in text
        # new ranks, on every GPU, none of them the dead one
        new = wait_for(lambda: len(c := rank_children(process)) == 8 and c, timeout=20)
        assert victim not in new
        wait_for(lambda: set(compute_apps()) == set(new), timeout=20)
        # and training goes on after the restart
        after = text.index("resuming from step")
        wait_for(lambda: "│ loss" in output.read_text()[after:], timeout=60)
        assert process.poll() is None
    finally:
        stop(process)


def test_sigterm_ends_cleanly(tmp_path: Path) -> None:
    output = tmp_path / "out"
    process = start_train(*FAST, "--speed-factor", "20", output=output)
    wait_for(lambda: "│ loss" in output.read_text(), timeout=60)
    children = rank_children(process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 143
    assert "Traceback" not in output.read_text()
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)
    wait_for(lambda: not compute_apps(), timeout=10)


def test_a_running_daemon_keeps_its_cluster_while_in_use() -> None:
    started = fakehw("daemon", "start", "--gpus-per-node", "4", "--gpu-model", "h200")
    assert started.returncode == 0, started.stderr
    adopted = fake_train("--speed-factor", "500", "--exit-after-steps", "5", "--seed", "1")
    assert adopted.returncode == 0, adopted.stderr
    assert "using the running daemon's cluster, 1 node x 4 NVIDIA H200" in adopted.stdout
    assert "on 4 x NVIDIA H200 (1 node)" in adopted.stdout
    viewer = subprocess.Popen([sys.executable, "-m", "fakehw.smi", "-l", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: '"clients": 2' in fakehw("daemon", "status", "--json").stdout)
        refused = fake_train("--nodes", "2", "--exit-after-steps", "5")
        assert refused.returncode == 2
        assert "in use (0 GPU processes, 1 other clients)" in refused.stderr
        assert "fakehw daemon stop" in refused.stderr
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)
    # idle again: the daemon is replaced by one of the cluster asked for
    replaced = fake_train("--gpus", "8", "--speed-factor", "500", "--exit-after-steps", "3")
    assert replaced.returncode == 0, replaced.stderr
    assert "restarted the idle fakehw daemon (1 node x 4 NVIDIA H200)" in replaced.stdout
    assert "on 8 x NVIDIA H100 80GB HBM3 (1 node)" in replaced.stdout


# ------------------------------------------------------------- the terminal
def test_ctrl_c_saves_and_restores_the_terminal(tmux) -> None:  # type: ignore[no-untyped-def]
    command = (f"{sys.executable} -m fakehw.train {' '.join(FAST)} --speed-factor 20 --seed 6;"
               " echo EXIT=$?")  # fmt: skip
    tmux("send-keys", "-t", "t", command, "Enter")

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "t")

    wait_for(lambda: "│ loss" in screen(), timeout=60)
    assert tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "0"  # live bar
    assert re.search(r"run ▕.*▏ +\d+\.\d% +step", screen())  # pretraining: a share of an epoch
    tmux("send-keys", "-t", "t", "C-c")
    text = wait_for(lambda: re.search(r"^EXIT=\d+", s := screen(), re.MULTILINE) and s, timeout=60)
    assert "interrupted: saving a checkpoint" in text
    assert "run interrupted" in text
    assert "EXIT=130" in text
    assert tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"  # cursor back


def test_closing_its_pane_ends_the_run_cleanly(tmux, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = (f"TMPDIR={scratch} {sys.executable} -m fakehw.train {' '.join(FAST)} "
               "--speed-factor 20 --seed 6")  # fmt: skip
    tmux("new-window", "-d", "-n", "job", command)

    def processes() -> list[dict[str, object]]:
        return json.loads(fakehw("daemon", "status", "--json").stdout or "{}").get("processes", [])

    ranks = wait_for(lambda: [p["pid"] for p in processes()], timeout=60)
    assert len(ranks) == 8 and all(alive(pid) for pid in ranks)  # type: ignore[arg-type]
    assert [d.name[:11] for d in scratch.iterdir()] == ["fake-train-"]
    tmux("kill-window", "-t", "job")  # its terminal goes away: SIGHUP
    wait_for(lambda: not processes(), timeout=15)  # the GPUs are free
    assert not any(alive(pid) for pid in ranks)  # type: ignore[arg-type]
    assert list(scratch.iterdir()) == []  # nothing left behind


def test_narrow_terminal_keeps_the_grid_readable(tmux) -> None:  # type: ignore[no-untyped-def]
    tmux("resize-window", "-t", "t", "-x", "60", "-y", "40")
    command = (f"{sys.executable} -m fakehw.train {' '.join(FAST)} --speed-factor 50 --seed 6 "
               "--exit-after-steps 3; echo EXIT=$?")  # fmt: skip
    tmux("send-keys", "-t", "t", command, "Enter")
    wait_for(
        lambda: re.search(r"^EXIT=0", tmux("capture-pane", "-p", "-t", "t"), re.MULTILINE),
        timeout=60,
    )
    history = tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")
    grid = [line for line in history.splitlines() if re.search(r"\d+%\s+\d+C\s+\d+W", line)]
    assert grid
    assert all(len(line) <= 60 for line in grid)
    cells = sum(len(re.findall(r"\d+C\s+\d+W", line)) for line in grid)
    assert cells == 8  # every GPU shown once, none cut off
    time.sleep(0)  # keep the tmux fixture's server until here
