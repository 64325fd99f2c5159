"""fake-train read as an experienced ML engineer reads it: every figure checked by hand
against the others and against what the hardware and the published numbers allow.

Each test parses the real output (stdout, stderr, --metrics-jsonl) of real 64-GPU runs
(8 nodes x 8 H100, the default cluster) in several styles, tasks and seeds. The runs
share one daemon in a runtime directory of this module and run one after the other (a
run's ranks hold real memory on the GPUs they attach to).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import REAL, Records, TrainRuns, wait_for

SPEED = ["--speed-factor", "1000"]
# Real item counts of the benchmarks' test splits (lm-evaluation-harness).
ITEMS = {"hellaswag": 10042, "arc_easy": 2376, "mmlu": 14042, "gsm8k": 1319}
# What the fabric of an H100 node allows per GPU: NVLink 4 (NV18) 450 GB/s each way;
# one 400 Gb/s InfiniBand NIC per GPU: 50 GB/s.
LINK_GBPS = {"NVLink": 450.0, "InfiniBand": 50.0}


class Run(Records):
    def __init__(self, args: tuple[str, ...], stdout: str, stderr: str,
                 metrics: list[dict[str, object]]) -> None:  # fmt: skip
        super().__init__(metrics)
        self.args, self.stdout, self.stderr, self.metrics = args, stdout, stderr, metrics

    @property
    def text(self) -> str:
        """What the user reads, NCCL's chatter left out."""
        return "\n".join(line for line in self.stdout.splitlines() if "NCCL INFO" not in line)


Runs = TrainRuns[Run]


def play(runs: Runs, args: tuple[str, ...], index: int) -> Run:
    metrics = runs.base / f"m{index}.jsonl"
    result = runs.play(*SPEED, *args, "--metrics-jsonl", str(metrics))
    return Run(args, result.stdout, result.stderr, Records.read(metrics))


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    played = TrainRuns(Path(tempfile.mkdtemp(prefix="fhw-fid-")), play)
    yield played
    played.stop()


def number(text: str) -> float:
    """``1,234`` / ``2.6B`` / ``164.6M`` / ``549.2k`` -> a float."""
    scale = {"k": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}  # si(): 9.0T, 300.0B, 54.0M
    text = text.replace(",", "")
    if text[-1] in scale:
        return float(text[:-1]) * scale[text[-1]]
    return float(text)


def line_of(run: Run, pattern: str) -> re.Match[str]:
    match = re.search(pattern, run.text, re.MULTILINE)
    assert match, f"no line matches {pattern!r} in:\n{run.text[:3000]}"
    return match


# ------------------------------------------------------------ 1. size labels
def test_sizes_are_labelled_as_the_model_card_gives_them(runs: Runs) -> None:
    run = runs("--task", "sft", "--model", "Qwen2.5-14B", "--seed", "7", "--exit-after-steps", "20")
    header = line_of(run, r"^fake-train · sft · (\S+) \(([\d.]+)B params\)")
    exact = int(line_of(run, r"→ ([\d,]+) parameters").group(1).replace(",", ""))
    assert header.group(1) == "Qwen2.5-14B"
    assert header.group(2) == f"{exact / 1e9:.1f}" == "14.8"  # not "15B": 14,769,689,600
    assert re.search(r"/qwen2\.5-14b-sft-", run.text)  # the run directory keeps the name


# --------------------------------------------- 2. communication fits the step
@pytest.mark.parametrize("seed", ["5", "11"])  # full shard over 16 (TP 4); hybrid over 8
def test_every_collective_fits_the_fabric_and_its_step(runs: Runs, seed: str) -> None:
    """nccl lines: busbw within what the link carries; the exposed part of the printed
    collectives fits in the step's exposed communication, and the step is compute plus
    what is not hidden; FSDP's gathers span the shard group the parallel line names."""
    run = runs("--seed", seed, "--exit-after-steps", "5000")
    parallel = line_of(
        run, r"parallel\s+DP (\d+) · TP (\d+) · PP \d+(?: · EP \d+)? · (.*?) · micro"
    )
    hybrid = re.search(
        r"hybrid shard \(ZeRO-3 over (\d+) GPUs, (\d+) replicas\)", parallel.group(3)
    )
    shard_group = int(hybrid.group(1)) if hybrid else int(parallel.group(1))
    if hybrid:
        assert shard_group * int(hybrid.group(2)) == int(parallel.group(1))
    pattern = (
        r"nccl\s+(\w+) of (\w+) ([\d.]+) (GiB|MiB) over (\d+) ranks \((\w+)\)"
        r"(?:, (\d+) per step,)? ([\d.]+) ms each · algbw ([\d.]+) GB/s · busbw ([\d.]+) GB/s"
        r" · (\d+)% hidden"
    )
    lines = re.findall(pattern, run.text)
    assert lines, run.text[-3000:]
    step = statistics.median(float(r["step_time_s"]) for r in run.steps)  # type: ignore[arg-type]
    exposed = statistics.median(float(r["exposed_comm_s"]) for r in run.steps)  # type: ignore[arg-type]
    compute = statistics.median(float(r["compute_s"]) for r in run.steps)  # type: ignore[arg-type]
    for op, _purpose, amount, unit, ranks, link, calls, ms, algbw, busbw, hidden in lines:
        nbytes = float(amount) * (1024**3 if unit == "GiB" else 1024**2)
        assert float(busbw) <= LINK_GBPS[link], (op, busbw, link)
        assert nbytes / (float(ms) / 1000) / 1e9 == pytest.approx(float(algbw), rel=0.02)
        share = (1 - int(hidden) / 100) * int(calls or 1) * float(ms) / 1000
        assert share <= exposed * 1.1 + 0.005, (op, share, exposed)
        assert int(calls or 1) * float(ms) / 1000 < step
        assert int(ranks) in (2, 4, 8, 16, 32, 64)
        if op in ("AllGather", "ReduceScatter"):
            assert int(ranks) == shard_group, (op, ranks, parallel.group(0))
            assert link == ("NVLink" if shard_group * int(parallel.group(2)) <= 8 else "InfiniBand")
    assert compute + exposed <= step * 1.02


# ------------------------------------------------------- 3. pipeline bubble
def test_pipeline_parallel_pays_its_bubble(runs: Runs) -> None:
    run = runs("--style", "megatron", "--model", "Llama-3.1-70B", "--seed", "2",
               "--exit-after-steps", "200")  # fmt: skip
    pp = int(line_of(run, r"pipeline_model_parallel_size \.+ (\d+)").group(1))
    micro = int(line_of(run, r"setting number of micro-batches to constant (\d+)").group(1))
    assert pp > 1  # 70B on 64 H100: a pipeline
    assert micro >= 4 * pp  # as real configs keep the bubble small
    bubble = (pp - 1) / (micro + pp - 1)
    peak = 989.4  # H100 SXM dense BF16
    for record in run.steps:
        assert record["bubble_fraction"] == pytest.approx(bubble, rel=1e-6)
        busy = float(record["compute_s"]) / (1 - bubble)  # type: ignore[arg-type]
        assert busy <= float(record["step_time_s"]) * 1.01  # type: ignore[arg-type]
    # the printed throughput is what the step leaves after the bubble
    printed = [float(x) for x in re.findall(r"TFLOP/s/GPU\): ([\d.]+)", run.text)]
    assert printed and max(printed) < peak * 0.62 * (1 - bubble) * 1.05


# -------------------------------------------------------------- 4. MoE memory
def test_moe_under_zero3_holds_equal_weight_and_gradient_shards(runs: Runs) -> None:
    run = runs("--model", "DeepSleep-MoE-16B", "--seed", "3", "--exit-after-steps", "20")
    memory = line_of(
        run,
        r"memory\s+per GPU: weights ([\d.]+) GiB · grads ([\d.]+) · "
        r"optimizer ([\d.]+) · activations ([\d.]+) · ([\d.]+) GiB reserved",
    )
    weights, grads, optimizer, activations, reserved = (float(g) for g in memory.groups())
    assert "ZeRO-3" in line_of(run, r"parallel\s+.*").group(0)
    assert weights == grads  # bf16 weights and bf16 grads: the same shard
    assert optimizer == pytest.approx(6 * weights, rel=0.05)  # fp32 master + Adam m, v
    assert weights + grads + optimizer + activations < reserved < 79.6


def test_megatron_moe_memory_follows_its_expert_parallel_shards(runs: Runs) -> None:
    """Megatron with expert parallelism: a rank holds the dense layers and 1/EP of the
    experts; the distributed optimizer shards dense states over DP and an expert's over
    the DP/EP ranks that hold it. Its "Theoretical memory footprints" line follows, as
    Megatron's own formula (6 + 12/DP bytes a parameter) counts it."""
    run = runs("--style", "megatron", "--model", "DeepSleep-MoE-16B", "--seed", "3",
               "--exit-after-steps", "20")  # fmt: skip
    ep = int(line_of(run, r"expert_model_parallel_size \.+ (\d+)").group(1))
    dp = int(line_of(run, r"data_parallel_size \.+ (\d+)").group(1))
    tp = int(line_of(run, r"tensor_model_parallel_size \.+ (\d+)").group(1))
    pp = int(line_of(run, r"pipeline_model_parallel_size \.+ (\d+)").group(1))
    assert ep > 1 and tp == pp == 1  # a 16B MoE on 64 H100: experts spread, no model split
    local = int(line_of(run, r"model parallel rank \(0, 0\): (\d+)").group(1))
    # the whole model's count, as the default style prints it for the same model
    same = runs("--model", "DeepSleep-MoE-16B", "--seed", "3", "--exit-after-steps", "20")
    total = int(line_of(same, r"→ ([\d,]+) parameters").group(1).replace(",", ""))
    experts = (total - local) * ep / (ep - 1)
    dense = total - experts
    shard = dense / dp + (experts / ep) / (dp // ep)
    printed = float(line_of(run, r"weight and optimizer=([\d.]+) MB").group(1))
    # bf16 weights and fp32 main grads on the rank (6 bytes), fp32 Adam sharded (12)
    assert printed == pytest.approx((6 * local + 12 * shard) / 2**20, rel=0.01)


# -------------------------------------------------- 5. tokens and the dataset
@pytest.mark.parametrize("task", ["sft", "lora", "dpo"])
def test_a_run_trains_no_more_than_its_epochs_of_the_dataset(runs: Runs, task: str) -> None:
    run = runs("--task", task, "--seed", "5", "--exit-after-steps", "20")
    data = line_of(run, r"dataset\s+\S+: ([\d,]+) (samples|pairs) · ([\d.]+[kMB]?) tokens")
    train = line_of(run, r"train\s+([\d,]+) steps · ([\d,.]+[kMB]?) (tokens|pairs) · (\d+) epoch")
    steps, epochs = int(train.group(1).replace(",", "")), int(train.group(4))
    if task == "dpo":  # pairs, padded: counted as pairs, at most the dataset's per epoch
        assert (data.group(2), train.group(3)) == ("pairs", "pairs")
        assert number(train.group(2)) <= epochs * number(data.group(1))
        assert "ppl" not in run.text.split("train   ")[1]  # DPO's loss is no perplexity
        assert all(r["ppl"] is None for r in run.steps + run.events("eval"))
    else:
        trained = number(train.group(2))
        assert trained <= epochs * number(data.group(3)) * 1.005  # (the rounding of both)
        assert trained >= 0.9 * epochs * number(data.group(3))  # whole epochs of it
    tokens_per_step = int(run.steps[0]["global_batch_tokens"])  # type: ignore[call-overload]
    if task != "dpo":
        assert steps * tokens_per_step == pytest.approx(number(train.group(2)), rel=0.001)


def test_a_pretraining_budget_is_counted_as_a_share_of_the_datasets_epoch(runs: Runs) -> None:
    run = runs("--seed", "5", "--exit-after-steps", "300")
    data = line_of(run, r"dataset\s+\S+: [\d,]+ samples · ([\d.]+[kMBT]) tokens")
    train = line_of(run, r"train\s+[\d,]+ steps · ([\d.]+[kMBT]) tokens · ([\d.]+)% of an epoch")
    share = number(train.group(1)) / number(data.group(1))
    assert float(train.group(2)) == pytest.approx(100 * share, abs=0.15)
    last = run.steps[-1]
    dataset_tokens = number(data.group(1))
    assert float(last["epoch"]) == pytest.approx(
        int(last["tokens_seen"]) / dataset_tokens, rel=0.02
    )  # type: ignore[arg-type, call-overload]


# ------------------------------------------------------------- 6. benchmarks
def benchmark_table(run: Run) -> dict[str, tuple[float, float]]:
    """The exported model's lm-eval table (a quantized copy's follows it)."""
    first = run.stdout.split("\nhf (")[1]
    rows = re.findall(r"^\|(\w+)\s*\|.*\|([\d.]+)\|±\|([\d.]+)\|$", first, re.MULTILINE)
    return {task: (float(value), float(err)) for task, value, err in rows}


@pytest.mark.parametrize(
    "args",
    [
        ("--seed", "5", "--exit-after-steps", "300"),
        ("--style", "hf", "--task", "sft", "--seed", "5", "--exit-after-steps", "20"),
        ("--task", "lora", "--model", "Qwen3-4B", "--seed", "7", "--quantize", "gptq"),
    ],
)
def test_benchmark_scores_are_counts_of_the_tasks_real_items(
    runs: Runs, args: tuple[str, ...]
) -> None:
    table = benchmark_table(runs(*args))
    assert set(table) == set(ITEMS)
    for task, (value, err) in table.items():
        n = ITEMS[task]
        k = round(value * n)
        assert abs(k / n - value) <= 0.00005 + 1e-9, (task, value, n)  # k of n, rounded
        expected = math.sqrt(value * (1 - value) / (n - 1))  # lm-eval's sample stderr
        tolerance = 0.3 * expected if task == "mmlu" else 0.00006  # MMLU: pooled subtasks
        assert abs(err - expected) <= tolerance + 0.00005, (task, err, expected)


def test_benchmarks_follow_the_model_and_its_training(runs: Runs) -> None:
    """A model trained from scratch for a few hundred steps is at chance (multiple
    choice: 0.25, GSM8K: 0); a LoRA of Qwen3-4B keeps the base model's published
    scores (MMLU 73.0 %, HellaSwag ~0.73)."""
    scratch = benchmark_table(runs("--seed", "5", "--exit-after-steps", "300"))
    for task in ("hellaswag", "arc_easy", "mmlu"):
        assert abs(scratch[task][0] - 0.25) < 5 * scratch[task][1] + 0.01, (task, scratch)
    assert scratch["gsm8k"][0] < 0.01
    tuned = benchmark_table(runs("--task", "lora", "--model", "Qwen3-4B", "--seed", "7",
                                 "--quantize", "gptq"))  # fmt: skip
    assert 0.70 <= tuned["mmlu"][0] <= 0.76
    assert tuned["arc_easy"][0] > tuned["mmlu"][0] - 0.05
    assert all(tuned[t][0] > scratch[t][0] + 0.3 for t in ITEMS)


# ------------------------------------------------------------- 7. HF Trainer
def test_hf_trainer_writes_what_transformers_writes(runs: Runs) -> None:
    run = runs("--style", "hf", "--seed", "5", "--exit-after-steps", "400")
    dicts = [line for line in run.stdout.splitlines() if line.startswith("{")]
    logged = [eval(line) for line in dicts]
    steps = [d for d in logged if "loss" in d]
    assert steps and all(isinstance(v, str) for d in steps for v in d.values())
    for d in steps:  # transformers 5: 4 significant digits, as strings
        for key in ("loss", "grad_norm"):
            digits = d[key].replace(".", "").lstrip("0")
            assert len(digits) <= 4, d
    final = [d for d in logged if "train_runtime" in d][-1]
    # train_loss: the mean over every step (the first ones at ~ln(vocab)), not the last
    assert float(final["train_loss"]) > float(steps[-1]["loss"]) + 0.5
    # tqdm goes to stderr, never to stdout; pretraining from scratch loads no shards
    assert "it/s]" in run.stderr or "s/it]" in run.stderr
    assert "%|" not in run.stdout
    assert "Loading checkpoint shards" not in run.stdout + run.stderr
    # train_runtime agrees with tqdm's own s/it, and samples/s with it
    rates = [float(x) for x in re.findall(r"([\d.]+)s/it\]", run.stderr.split("Map")[-1])]
    assert rates
    runtime = float(final["train_runtime"])
    steps_done = 400
    assert runtime >= steps_done * min(rates) * 0.95
    assert float(final["train_samples_per_second"]) == pytest.approx(
        steps_done * int(run.steps[0]["global_batch_tokens"]) / 4096 / runtime,
        rel=0.05,  # type: ignore[call-overload]
    )


def dict_kinds(text: str) -> list[tuple[str, tuple[str, ...], type]]:
    """Each printed dict of an HF log: (kind, its keys, the type of its values)."""
    found = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        logged = eval(line)
        kind = "train" if "loss" in logged else "eval" if "eval_loss" in logged else "end"
        types = {type(v) for v in logged.values()}
        assert len(types) == 1, line
        found.append((kind, tuple(logged), types.pop()))
    return found


def test_hf_dicts_follow_the_real_trainer_capture_line_for_line_in_form(runs: Runs) -> None:
    """tests/real/hf-trainer/stdout.txt (transformers 5.17): logging dicts and eval dicts
    of strings, then train()'s own dict, then the script's print(trainer.evaluate())."""
    real = dict_kinds((REAL / "hf-trainer" / "stdout.txt").read_text())
    ours = dict_kinds(runs("--style", "hf", "--seed", "5", "--exit-after-steps", "400").stdout)
    shapes = {(kind, keys, kind_type) for kind, keys, kind_type in real}
    assert set(ours) <= shapes  # every dict as the real Trainer writes it

    def order(kinds: list[tuple[str, tuple[str, ...], type]]) -> str:
        letters = {("train", str): "s", ("eval", str): "e", ("end", str): "R", ("eval", float): "E"}
        text = "".join(letters[kind, value_type] for kind, _keys, value_type in kinds)
        return re.sub(r"s+", "s", text)

    assert re.fullmatch(r"(se)+RE", order(real))
    assert re.fullmatch(r"(se)+RE", order(ours)), order(ours)


def test_hf_fine_tuning_loads_its_base_models_shards_and_starts_near_its_loss(runs: Runs) -> None:
    run = runs("--style", "hf", "--task", "sft", "--seed", "5", "--exit-after-steps", "20")
    assert "Loading checkpoint shards: 100%" in run.stderr
    first = next(eval(line) for line in run.stdout.splitlines() if line.startswith("{'loss'"))
    assert float(first["loss"]) < 2.5  # a base model on chat data, not ln(32000) = 10.4


# ---------------------------------------------------------------- 8. DeepSpeed
def test_deepspeed_world_info_decodes_to_every_node(runs: Runs) -> None:
    run = runs("--style", "deepspeed", "--seed", "5", "--exit-after-steps", "20")
    encoded = line_of(run, r"--world_info=([A-Za-z0-9+/=]+)").group(1)
    decoded = json.loads(base64.urlsafe_b64decode(encoded))
    printed = line_of(run, r"WORLD INFO DICT: (\{.*\})").group(1)
    assert decoded == eval(printed)
    assert len(decoded) == 8 and all(v == list(range(8)) for v in decoded.values())


# ----------------------------------------------------- 9. ranks on their hosts
def test_a_slow_rank_is_named_with_its_own_host(runs: Runs) -> None:
    run = runs("--seed", "5", "--exit-after-steps", "5000")
    named = re.findall(r"rank (\d+) \((dgx-h100-(\d+))\)", run.text)
    assert named  # this seed has a straggler
    for rank, _host, node in named:
        assert int(node) == int(rank) // 8 + 1


# ----------------------------------------------------------------- 10. NCCL
def test_nccl_init_matches_the_job_and_the_seed(runs: Runs) -> None:
    run = runs("--seed", "5", "--exit-after-steps", "20")
    nccl = [line for line in run.stdout.splitlines() if "NCCL INFO" in line]
    joined = "\n".join(nccl)
    pattern = r"\] NCCL INFO comm 0x\w+ rank \d+ nRanks 64 nNodes 8 localRanks 8 localRank (\d+)"
    local = {int(m) for m in re.findall(pattern, joined)}
    assert local == set(range(8))  # every local rank of this node reports
    channels = int(re.search(r"(\d+) coll channels", "\n".join(nccl)).group(1))  # type: ignore[union-attr]
    rings = re.findall(r"Channel (\d+)/(\d+) :((?: \d+)+)\s*$", "\n".join(nccl), re.MULTILINE)
    assert len(rings) == channels
    for _index, total, members in rings:
        assert int(total) == channels
        assert sorted(int(r) for r in members.split()) == list(range(64))  # all 64 ranks
    ids = set(re.findall(r"commId (0x[0-9a-f]+)", "\n".join(nccl)))
    again = runs("--seed", "5", "--exit-after-steps", "21")  # the same seed, another run
    assert ids and ids == set(re.findall(r"commId (0x[0-9a-f]+)", again.stdout))


def test_a_local_rank_crash_is_seen_by_torchrun_at_once(runs: Runs) -> None:
    run = runs("--seed", "2", "--exit-after-steps", "60", "--inject", "rank-crash:3@20")
    assert "Watchdog caught" not in run.text
    assert re.search(r"failed \(exitcode: -9\) local_rank: 3 \(pid: \d+\)", run.text)
    assert "stopping early at step 60 of" in run.text  # the lost steps are trained again


def test_the_watchdog_names_the_steps_real_collective(runs: Runs) -> None:
    """A rank of another node dies: this node's 8 ranks wait in the collective until
    NCCL's watchdog (600 s) names it and aborts them."""
    run = runs("--seed", "2", "--exit-after-steps", "60", "--inject", "rank-crash:11@20")
    stamps = re.findall(r"\[Rank (\d)\] Watchdog caught", run.text)
    assert sorted(int(r) for r in stamps) == list(range(8))
    aborted = re.findall(r"failed \(exitcode: -6\) local_rank: (\d)", run.text)
    assert sorted(int(r) for r in aborted) == list(range(8))
    watchdog = line_of(run, r"OpType=(\w+), NumelIn=(\d+), NumelOut=(\d+)")
    params = int(line_of(run, r"→ ([\d,]+) parameters").group(1).replace(",", ""))
    parallel = line_of(run, r"parallel\s+DP (\d+) · TP (\d+) · PP (\d+) · (.*?) ·").groups()
    numel_in, numel_out = int(watchdog.group(2)), int(watchdog.group(3))
    if watchdog.group(1) == "_ALLGATHER_BASE":  # FSDP's parameter gather: a shard in, all out
        assert numel_out == params // (int(parallel[1]) * int(parallel[2]))
        assert numel_in * (numel_out // numel_in) == numel_out
    assert numel_in != 262144000  # not a constant: the model's own sizes


# ---------------------------------------------------------- 11. eval speed
@pytest.mark.parametrize("style", ["hf", "megatron", "deepspeed", "default"])
def test_validation_is_forward_only_speed(runs: Runs, style: str) -> None:
    run = runs("--style", style, "--seed", "5", "--exit-after-steps", "400")
    training = statistics.median(float(r["tokens_per_s"]) for r in run.steps)  # type: ignore[arg-type]
    evals = run.events("eval")
    assert evals
    for e in evals:
        assert 2.4 * training < float(e["tokens_per_s"]) < 3.4 * training  # type: ignore[arg-type]
    if style == "hf":  # tqdm's eval bar ends at the eval_runtime HF then prints
        runtimes = [float(d) for d in re.findall(r"'eval_runtime': '([\d.]+)'", run.stdout)]
        bars = re.findall(r"(\d+)/\1 \[(\d\d):(\d\d)<00:00", run.stderr)
        elapsed = {int(m) * 60 + int(s) for _n, m, s in bars}
        assert runtimes and all(int(r) in elapsed or round(r) in elapsed for r in runtimes)


# -------------------------------------------------- 12. ranks that look alive
def test_rank_processes_hold_memory_and_threads_like_real_ranks(runs: Runs) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fakehw.train", "--seed", "5", "--exit-after-steps", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=runs.env(),
    )  # fmt: skip
    try:

        def ranks() -> list[psutil.Process]:
            children = psutil.Process(process.pid).children()
            # a rank settles within a moment of starting: its memory touched, its threads up
            ready = [c for c in children
                     if c.memory_info().rss > 200 * 2**20 and c.num_threads() >= 8]  # fmt: skip
            return ready if len(ready) == 8 else []

        found = wait_for(ranks, timeout=60, interval=0.5)
        for rank in found:  # NCCL, the data loader, the pin-memory thread... and still cheap
            assert rank.memory_info().rss < 2 * 2**30
    finally:
        process.terminate()
        process.wait(timeout=60)


# ----------------------------------------------------- 13. warm-up, NCCL init
def test_first_steps_are_slower_and_nccl_init_grows_with_ranks(runs: Runs) -> None:
    """Step by step (a speed at which every step is logged), the first steps are slower
    (allocator, cuBLAS and NCCL warming up); Ctrl-C then saves and ends the run."""
    metrics = runs.base / "warm.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "fakehw.train", "--model", "Llama-3.2-1B", "--nodes", "1",
         "--gpus", "8", "--seed", "5", "--speed-factor", "8", "--metrics-jsonl", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=runs.env(), text=True,
    )  # fmt: skip
    try:

        def steps() -> list[dict[str, float]]:
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            records = [json.loads(line) for line in lines if line.endswith("}")]
            found = [r for r in records if "event" not in r]
            return found if len(found) >= 8 else []

        first = wait_for(steps, timeout=90, interval=0.2)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    times = [r["step_time_s"] for r in first[:8]]
    assert [r["step"] for r in first[:8]] == list(range(1, 9))  # every step logged
    steady = statistics.median(times[5:8])
    assert times[0] > 1.8 * steady  # step 1: a few times a steady step
    assert times[0] > times[1] > times[2]  # then it settles
    assert abs(times[4] - steady) < 0.1 * steady
    times8 = [float(t) for t in re.findall(r"nranks 8 total ([\d.]+)", out)]
    big = runs("--seed", "5", "--nodes", "8", "--exit-after-steps", "20")  # 64 ranks
    times64 = [float(t) for t in re.findall(r"nranks 64 total ([\d.]+)", big.stdout)]
    assert times64 and times8 and min(times64) > 1.5 * max(times8)


# -------------------------------------------------------- 14. small giveaways
def test_early_stops_and_quantization_say_what_they_are(runs: Runs) -> None:
    stopped = runs("--seed", "5", "--exit-after-steps", "300")
    assert "run finished" not in stopped.text
    assert re.search(r"stopping early at step 300 of [\d,]+ \(--exit-after-steps 300\): "
                     r"saving, exporting and benchmarking the model as trained so far",
                     stopped.text)  # fmt: skip
    tuned = runs("--task", "lora", "--model", "Qwen3-4B", "--seed", "7", "--quantize", "gptq")
    assert "run finished" in tuned.text
    gptq = line_of(tuned, r"export\s+gptq .*\((\d+) s\)")
    assert int(gptq.group(1)) >= 120  # GPTQ calibrates layer by layer: minutes for 4B
    spike = re.findall(r"expected ~([\d.]+)", stopped.text)
    assert not spike  # no warning quotes the simulator's own curve


# --------------------------------------------------------- 15. one story clock
def stamp_seconds(stamp: str) -> int:
    h, m, s = (int(x) for x in stamp.split(":"))
    return h * 3600 + m * 60 + s


@pytest.mark.parametrize("style", ["default", "hf"])
def test_timestamps_elapsed_and_runtime_follow_one_clock(runs: Runs, style: str) -> None:
    run = runs("--style", style, "--seed", "5", "--exit-after-steps", "400")
    steps = run.steps
    for before, after in itertools.pairwise(steps):
        gap = float(after["time"]) - float(before["time"])  # type: ignore[arg-type]
        between = [e for e in run.metrics if "event" in e
                   and float(before["time"]) < float(e["time"]) <= float(after["time"])]  # type: ignore[arg-type]  # fmt: skip
        # the steps between two logged ones ran at the mean rate the log shows for the
        # interval (not the last step's: the clocks wander with the heat meanwhile, and a
        # straggler's stall may cover some of them), the evals and saves besides
        count = int(after["step"]) - int(before["step"])  # type: ignore[call-overload]
        extra = sum(float(e.get("runtime_s", e.get("seconds", 0))) for e in between)  # type: ignore[arg-type]
        stepping = count * float(after["interval_step_time_s"])  # type: ignore[arg-type]
        assert gap == pytest.approx(stepping + extra, rel=0.005, abs=0.5)
        assert float(after["elapsed_s"]) - float(before["elapsed_s"]) == pytest.approx(
            gap, abs=0.01
        )  # type: ignore[arg-type]
    if style == "default":
        stamps = re.findall(r"^\[(\d\d:\d\d:\d\d)\] step\s+(\d+)/", run.text, re.MULTILINE)
        clock = [stamp_seconds(s) for s, _ in stamps]
        deltas = [(b - a) % 86400 for a, b in itertools.pairwise(clock)]
        gaps = [float(b["time"]) - float(a["time"]) for a, b in itertools.pairwise(steps)]  # type: ignore[arg-type]
        assert all(abs(d - g) <= 1.0 for d, g in zip(deltas, gaps, strict=False))
    else:
        final = [eval(line) for line in run.stdout.splitlines() if "'train_runtime'" in line][-1]
        story = float(run.metrics[-1]["time"]) - float(steps[0]["time"])  # type: ignore[arg-type]
        assert float(final["train_runtime"]) > story * 0.9  # the first step to the end, at least
