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
                    r"(\d+) x (\d+)( · recompute)? → ([\d.]+) GiB · ([\d.]+) s/step · MFU "
                    r"([\d.]+)%( ← chosen)?$")  # fmt: skip


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
    for row in rows:
        assert row
        tp, pp, dp = int(row[1]), int(row[2]), int(row[3])
        assert tp * pp * dp == gpus and tp <= 8  # tensor parallelism within a node
        assert float(row[9]) <= target * memory + 0.05  # each fits what it claims
    times = [float(r[10]) for r in rows if r]
    assert times == sorted(times) and rows[0] and rows[0][12]  # the fastest is chosen
    chosen = rows[0]
    parallel = run.said("parallel")[0]
    assert f"DP {chosen[3]} · TP {chosen[1]} · PP {chosen[2]}" in parallel
    assert f"micro-batch {chosen[6]} · grad-accum {chosen[7]}" in parallel
    reserved = re.search(r"· ([\d.]+) GiB reserved of", run.said("memory")[0])
    assert reserved and float(reserved[1]) == pytest.approx(float(chosen[9]), abs=0.05)
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
