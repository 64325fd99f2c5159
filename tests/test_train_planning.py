"""The start of a run as a planner reads it: the topology the daemon serves, printed
as ``nvidia-smi topo -m`` prints it, the layouts the planner weighed (fastest first,
each within the memory it claims) and the one the run then uses, and a LoRA rank sized
from the GPU's memory with the figures that decided it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROGRAMS, TrainRuns

SPEED = ["--speed-factor", "1000", "--color", "never", "--exit-after-steps", "3"]
ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class Run:
    def __init__(self, stdout: str, env: dict[str, str]) -> None:
        self.stdout, self.env = stdout, env

    def said(self, tag: str) -> list[str]:
        return re.findall(rf"^\[\d\d:\d\d:\d\d\] {tag} +(.*)$", self.stdout, re.MULTILINE)


Runs = TrainRuns[Run]


def play(runs: Runs, args: tuple[str, ...], index: int) -> Run:
    return Run(runs.play(*SPEED, *args).stdout, runs.env())


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    played = TrainRuns(Path(tempfile.mkdtemp(prefix="fhw-plan-")), play)
    yield played
    played.stop()


CLUSTER = ("--seed", "3")  # 8 nodes x 8 H100: a Mixtral with TP, EP and ZeRO-3
ONE_NODE = ("--seed", "5", "--gpus", "8", "--task", "sft")
A100_LORA = ("--seed", "3", "--gpus", "8", "--gpu-model", "a100-40gb", "--task", "lora",
             "--model", "Llama-3.1-8B")  # fmt: skip
H100_LORA = ("--seed", "3", "--gpus", "8", "--task", "lora", "--model", "Llama-3.1-8B")


def test_the_topology_is_the_daemons_as_nvidia_smi_prints_it(runs: Runs) -> None:
    run = runs(*CLUSTER)
    smi = subprocess.run([*PROGRAMS["fake-nvidia-smi"], "topo", "-m"], capture_output=True,
                         text=True, timeout=60, check=True, env=run.env).stdout  # fmt: skip
    start = run.stdout.index("nvidia-smi topo -m\n") + len("nvidia-smi topo -m\n")
    expected = [("  " + line if line else "") for line in ESCAPE.sub("", smi).rstrip().split("\n")]
    assert run.stdout[start:].split("\n")[: len(expected)] == expected
    assert "\x1b[" not in run.stdout  # a log: no terminal codes
    links = run.said("topology")[-1]
    assert "8 GPUs per node: NVLink NV18 between every pair (NVSwitch)" in links
    assert "8 nodes over InfiniBand 400 Gb/s per GPU" in links
    assert "one node" in runs(*ONE_NODE).said("topology")[-1]


LAYOUT = re.compile(r"TP (\d+) · PP (\d+) · DP (\d+)(?: · EP (\d+))? · (\S+).*? · micro-batch "
                    r"(\d+) x (\d+)( · recompute)? · global batch (\d+) → ([\d.]+) GiB · "
                    r"([\d.]+) s/step · ([\d.]+)([kM]?) tokens/s · MFU ([\d.]+)%"
                    r"( ← chosen)?$")  # fmt: skip
SI = {"": 1, "k": 1e3, "M": 1e6}


@pytest.mark.parametrize("args", [CLUSTER, ONE_NODE, H100_LORA], ids=["cluster", "node", "lora"])
def test_the_planner_uses_the_fastest_layout_that_fits(runs: Runs, args: tuple[str, ...]) -> None:
    run = runs(*args)
    lines = run.said("planner")
    head = re.match(r"(\d+) layouts fit (\d+)% of the ([\d.]+) GiB a rank has", lines[0])
    assert head
    target, memory = int(head[2]) / 100, float(head[3])
    rows = [LAYOUT.search(line) for line in lines[1:] if LAYOUT.search(line)]
    assert rows and len(rows) <= int(head[1])
    gpus = 64 if args is CLUSTER else 8
    rates = []
    for row in rows:
        assert row
        tp, pp, dp = int(row[1]), int(row[2]), int(row[3])
        assert tp * pp * dp == gpus and tp <= 8  # tensor parallelism within a node
        assert int(row[9]) == dp * int(row[6]) * int(row[7])  # the batch the layout takes
        assert float(row[10]) <= target * memory + 0.05  # each fits what it claims
        rates.append(float(row[12]) * SI[row[13]])
        # the same model on the same GPUs: MFU goes with tokens/s
        assert float(row[14]) / rates[-1] == pytest.approx(
            float(rows[0][14]) / (float(rows[0][12]) * SI[rows[0][13]]), rel=0.02)  # type: ignore[index]  # fmt: skip
    assert rates == sorted(rates, reverse=True) and rows[0] and rows[0][15]  # fastest chosen
    chosen = rows[0]
    parallel = run.said("parallel")[0]
    assert f"DP {chosen[3]} · TP {chosen[1]} · PP {chosen[2]}" in parallel
    assert f"micro-batch {chosen[6]} · grad-accum {chosen[7]}" in parallel
    reserved = re.search(r"· ([\d.]+) GiB reserved of", run.said("memory")[0])
    assert reserved and float(reserved[1]) == pytest.approx(float(chosen[10]), abs=0.05)
    assert ("activation recomputation" in parallel) == bool(chosen[8])


def test_the_lora_rank_is_sized_from_the_gpus_memory(runs: Runs) -> None:
    ranks = {}
    for args in (A100_LORA, H100_LORA):
        run = runs(*args)
        config = re.search(r"rank (\d+) · alpha (\d+) · .* → trainable ([\d,]+) of", run.stdout)
        assert config
        rank = int(config[1])
        assert int(config[2]) == 2 * rank
        # Llama-3.1-8B's seven linear modules: rank x (in + out) summed, times 32 layers
        per_rank = 32 * (4096 * 2 + 5120 * 2 + 8192 + 3 * (4096 + 14336))
        assert int(config[3].replace(",", "")) == rank * per_rank
        sized = [re.search(r"rank (\d+): .* ([\d.]+) GiB, ([\d.]+)% of the ([\d.]+) GiB .*at "
                           r"most (\d+)%\): (chosen|too large)", line)
                 for line in run.said("lora") if "sized from memory" in line]  # fmt: skip
        assert sized and all(sized)
        budget = int(sized[0][5])  # type: ignore[index]
        for found in sized:
            assert found
            states = 16 * int(found[1]) * per_rank / 1024**3  # bf16 weights and grads, AdamW
            assert float(found[2]) == pytest.approx(states, abs=0.01)
            assert float(found[3]) == pytest.approx(100 * states / float(found[4]), abs=0.06)
            assert (found[6] == "chosen") == (int(found[1]) == rank)
            assert (float(found[3]) <= budget) == (found[6] == "chosen") or int(found[1]) == 8
        ranks[args] = rank
    assert ranks[A100_LORA] < ranks[H100_LORA]  # less memory left: a smaller rank


FRAMEWORKS = {
    "megatron": ("--style", "megatron", "--seed", "3", "--nodes", "4", "--model", "Llama-3.1-70B"),
    "deepspeed": ("--style", "deepspeed", "--seed", "5", "--nodes", "2", "--model", "Llama-3.1-8B"),
    "hf": ("--style", "hf", "--seed", "3", "--gpus", "8", "--task", "lora", "--model",
           "Llama-3.1-8B"),
}  # fmt: skip


def dotted(stdout: str, key: str) -> str:
    """A value of a framework's dotted arguments block (``key ....... value``)."""
    found = re.search(rf"\b{key} \.* ?(\S+)$", stdout, re.MULTILINE)  # no dots if it is long
    assert found, key
    return found[1]


@pytest.mark.parametrize("style", sorted(FRAMEWORKS))
def test_a_frameworks_launch_script_plans_the_layout_the_framework_then_uses(
    runs: Runs, style: str
) -> None:
    """A framework prints no plan of its own: the job's launch script reads the topology
    and plans before it starts the framework, in plain lines, and hands over the
    arguments of the chosen layout, which the framework's own lines then show."""
    run = runs(*FRAMEWORKS[style])
    # (fake-train's own word on the daemon it started comes first)
    out = "\n".join(line for line in run.stdout.split("\n") if not line.startswith("fake-train:"))
    assert out.startswith("+ nvidia-smi topo -m")  # before the framework's first line
    smi = subprocess.run([*PROGRAMS["fake-nvidia-smi"], "topo", "-m"], capture_output=True,
                         text=True, timeout=60, check=True, env=run.env).stdout  # fmt: skip
    matrix = ESCAPE.sub("", smi).rstrip().split("\n")
    assert out.split("\n")[1 : 1 + len(matrix)] == matrix
    planner = re.findall(r"^\[planner\] (.*)$", out, re.MULTILINE)
    assert not run.said("planner") and not run.said("topology")  # not the default style's
    assert "NVLink NV18 between every pair (NVSwitch)" in planner[0]
    rows = [LAYOUT.search(line) for line in planner if LAYOUT.search(line)]
    chosen = rows[0]
    assert chosen and chosen[15]
    tp, pp, dp, micro, accum = (int(chosen[i]) for i in (1, 2, 3, 6, 7))
    launching = planner[-1]
    assert launching.startswith("launching with ")
    if style == "megatron":
        assert (f"--tensor-model-parallel-size {tp} --pipeline-model-parallel-size {pp} "
                f"--micro-batch-size {micro} --global-batch-size {chosen[9]}"
                in launching)  # fmt: skip
        assert (f"data-parallel size: {dp}, " in out and f"tensor-model-parallel size: {tp}, "
                in out and f"pipeline-model-parallel size: {pp}, " in out)  # fmt: skip
        assert dotted(out, "micro_batch_size") == str(micro)
        assert dotted(out, "global_batch_size") == chosen[9]
        assert dotted(out, "tensor_model_parallel_size") == str(tp)
    elif style == "deepspeed":
        stage = {"ZeRO-2": "2", "ZeRO-3": "3"}[chosen[5]]
        assert launching == (f"launching with ds_config.json: train_micro_batch_size_per_gpu "
                             f"{micro}, gradient_accumulation_steps {accum}, "
                             f"zero_optimization.stage {stage}")  # fmt: skip
        assert dotted(out, "train_micro_batch_size_per_gpu") == str(micro)
        assert dotted(out, "gradient_accumulation_steps") == str(accum)
        assert dotted(out, "zero_optimization_stage") == stage
    else:
        rank = re.search(r"\[planner\] LoRA rank (\d+) · alpha (\d+)", out)
        assert rank
        assert launching.startswith(f"launching with --per_device_train_batch_size {micro} "
                                    f"--gradient_accumulation_steps {accum} --lora_r {rank[1]} "
                                    f"--lora_alpha {rank[2]}")  # fmt: skip
        assert any("sized from memory" in line and line.endswith("chosen") for line in planner)
        # PEFT's count is that rank's adapters on Llama-3.1-8B's seven modules
        per_rank = 32 * (4096 * 2 + 5120 * 2 + 8192 + 3 * (4096 + 14336))
        assert f"trainable params: {int(rank[1]) * per_rank:,} ||" in out
