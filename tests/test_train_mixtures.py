"""Runs on a mixture of datasets (``--mixture``), read from their real output: each
source's samples and losses add up to the run's, each source keeps to its weight,
and the sources differ as real data does (code is easier to predict than prose, once
the model has learned anything), in the log, the JSONL, TensorBoard and the report.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Records, TrainRuns

SPEED = ["--speed-factor", "1000", "--gpus", "8", "--color", "never"]
WEB_CODE_MATH = "fineweb-edu:0.7,starcoderdata:0.2,open-web-math:0.1"
CHAT_MATH = "OpenHermes-2.5:2,ultrachat_200k:1,OpenR1-Math-220k:1"


class Run(Records):
    def __init__(self, args: tuple[str, ...], stdout: str, records: list[dict[str, object]],
                 out: Path) -> None:  # fmt: skip
        super().__init__(records)
        self.args, self.stdout, self.out = args, stdout, out

    @property
    def weights(self) -> dict[str, float]:
        given = self.args[self.args.index("--mixture") + 1]
        pairs = [part.split(":") for part in given.split(",")]
        total = sum(float(w) for _, w in pairs)
        return {name: float(w) / total for name, w in pairs}


Runs = TrainRuns[Run]


def play(runs: Runs, args: tuple[str, ...], index: int) -> Run:
    metrics = runs.base / f"m{index}.jsonl"
    out = runs.base / f"out{index}"
    result = runs.play(*SPEED, *args, "--output-dir", str(out), "--metrics-jsonl", str(metrics))
    return Run(args, result.stdout, Records.read(metrics), out)


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    played = TrainRuns(Path(tempfile.mkdtemp(prefix="fhw-mix-")), play)
    yield played
    played.stop()


PRETRAIN = ("--seed", "5", "--mixture", WEB_CODE_MATH, "--exit-after-steps", "6000")
HF_SFT = ("--style", "hf", "--task", "sft", "--seed", "3", "--mixture", CHAT_MATH,
          "--exit-after-steps", "400")  # fmt: skip
MEGATRON = ("--style", "megatron", "--seed", "11", "--mixture", WEB_CODE_MATH,
            "--exit-after-steps", "300")  # fmt: skip
LORA_ZH = ("--task", "lora", "--seed", "2", "--mixture",
           "CryptoThink-zh-80k:1,CipherCoT-en-120k:1,OpenR1-Math-220k:2",
           "--exit-after-steps", "300")  # fmt: skip
ALL = [PRETRAIN, HF_SFT, MEGATRON, LORA_ZH]
IDS = ["pretrain", "hf-sft", "megatron", "lora"]


def sources(record: dict[str, object]) -> list[dict[str, float]]:
    return record["sources"]  # type: ignore[return-value]


@pytest.mark.parametrize("args", ALL, ids=IDS)
def test_the_sources_add_up_to_the_runs_samples_and_loss(runs: Runs, args: tuple[str, ...]) -> None:
    run = runs(*args)
    steps = run.steps
    assert steps and all("sources" in s for s in steps)
    batch = int(steps[0]["global_batch_tokens"]) // seq_of(run)  # type: ignore[call-overload]
    previous = 0
    for record in steps:
        parts = sources(record)
        assert [p["name"] for p in parts] == list(run.weights)
        step = int(record["step"])  # type: ignore[call-overload]
        assert sum(p["samples"] for p in parts) == (step - previous) * batch
        assert sum(p["samples_seen"] for p in parts) == record["samples_seen"] == step * batch
        mean = sum(p["loss"] * p["samples"] for p in parts) / sum(p["samples"] for p in parts)
        assert mean == pytest.approx(record["interval_loss"], rel=1e-9)
        previous = step
    evals = run.events("eval")
    assert evals
    for e in evals:
        parts = sources(e)
        assert sum(p["samples"] for p in parts) == e["samples"]
        mean = sum(p["loss"] * p["samples"] for p in parts) / int(e["samples"])  # type: ignore[call-overload]
        assert mean == pytest.approx(e["loss"], rel=1e-9)


def seq_of(run: Run) -> int:
    found = re.search(r"global batch \d+ x (\d+) =|seq_length \.+ (\d+)|max length (\d+)",
                      run.stdout)  # fmt: skip
    if found:
        return int(next(g for g in found.groups() if g))
    record = run.steps[0]  # HF prints neither: tokens per step over sequences per step
    return int(record["global_batch_tokens"]) * int(record["step"]) // int(record["samples_seen"])  # type: ignore[call-overload]


@pytest.mark.parametrize("args", ALL, ids=IDS)
def test_each_source_keeps_within_a_sample_of_its_weight(runs: Runs, args: tuple[str, ...]) -> None:
    run = runs(*args)
    for record in run.steps:
        seen = int(record["samples_seen"])  # type: ignore[call-overload]
        for part in sources(record):
            assert abs(part["samples_seen"] - run.weights[str(part["name"])] * seen) < 1


def test_code_and_math_are_easier_than_web_text_once_the_model_has_learned(runs: Runs) -> None:
    run = runs(*PRETRAIN)
    last = {p["name"]: p["loss"] for p in sources(run.steps[-1])}
    assert last["starcoderdata"] < last["open-web-math"] < last["fineweb-edu"]
    assert last["starcoderdata"] < 0.8 * last["fineweb-edu"]
    # a model that knows nothing guesses every source's tokens alike: the sources part
    # as it learns, and the code's share of the web's loss falls validation by validation
    ratios = [
        {p["name"]: p["loss"] for p in sources(e)} for e in run.events("eval") if not e["final"]
    ]
    code_to_web = [r["starcoderdata"] / r["fineweb-edu"] for r in ratios]
    assert len(code_to_web) >= 10
    # (each validation's sources scatter by their sequences' spread: ~0.5 % here)
    assert all(b < a + 0.025 for a, b in itertools.pairwise(code_to_web))
    assert code_to_web[-1] < code_to_web[0] - 0.05
    final = [e for e in run.events("eval") if e["final"]][-1]
    held_out = {p["name"]: p["loss"] for p in sources(final)}
    assert held_out["starcoderdata"] < held_out["open-web-math"] < held_out["fineweb-edu"]
    # the fine-tune's math traces are easier than its chat
    sft = {p["name"]: p["loss"] for p in sources(runs(*HF_SFT).steps[-1])}
    assert sft["OpenR1-Math-220k"] < min(sft["OpenHermes-2.5"], sft["ultrachat_200k"])


def test_the_start_says_how_often_the_run_reads_each_source(runs: Runs) -> None:
    """weight x the run's tokens / the source's tokens: the passes over it."""
    run = runs(*PRETRAIN)
    scale = {"M": 1e6, "B": 1e9, "T": 1e12}
    lines = re.findall(r"mixture +(\S+) +weight ([\d.]+) · [\d,]+ samples · ([\d.]+)([MBT]) "
                       r"tokens · ([\d.]+) passes in ([\d.]+)([MBT]) tokens( \(upsampled\))?",
                       run.stdout)  # fmt: skip
    assert [name for name, *_ in lines] == list(run.weights)
    for name, weight, tokens, unit, passes, run_tokens, run_unit, upsampled in lines:
        expected = (
            float(weight) * float(run_tokens) * scale[run_unit] / (float(tokens) * scale[unit])
        )
        assert float(passes) == pytest.approx(expected, rel=0.01, abs=0.006)
        assert bool(upsampled) == (float(passes) > 1)
        assert float(weight) == pytest.approx(run.weights[name], abs=0.0005)
    assert any(upsampled for *_, upsampled in lines)  # OpenWebMath: 14.7B tokens at 10 %


def test_the_by_source_lines_print_what_the_metrics_hold(runs: Runs) -> None:
    run = runs(*PRETRAIN)
    by_step = {int(s["step"]): s for s in run.steps}  # type: ignore[call-overload]
    printed = re.findall(r"mixture +steps? (\d+)(?:-(\d+))? by source: (.+)", run.stdout)
    assert len(printed) >= 2
    for first, last, text in printed:
        record = by_step[int(last or first)]
        parts = re.findall(r"(\S+) ([\d.]+) \(([\d,]+) seq\)", text)
        assert [(n, f"{p['loss']:.4f}", f"{p['samples']:,}") for n, p in
                zip(run.weights, sources(record), strict=True)] == parts  # fmt: skip
    evals = re.findall(r"(final )?val loss by source: (.+)", run.stdout)
    assert len(evals) == len(run.events("eval"))


def test_tensorboard_and_the_report_hold_each_source(runs: Runs) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = runs(*PRETRAIN)
    tags: dict[str, dict[int, float]] = {}
    for path in sorted(run.out.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("mixture/"):
                tags.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    for record in run.steps:
        for part in sources(record):
            name, step = part["name"], int(record["step"])  # type: ignore[call-overload]
            assert tags[f"mixture/{name}/loss"][step] == pytest.approx(part["loss"], rel=1e-6)
            assert tags[f"mixture/{name}/samples_seen"][step] == part["samples_seen"]
    report = (run.out / "report.md").read_text()
    table = re.findall(r"^\| (\S+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+)% \| \S+ \| ([\d.]+) \| "
                       r"([\d.]+) \|$", report, re.MULTILINE)  # fmt: skip
    assert [row[0] for row in table] == [*run.weights, "all"]
    *rows, total = table
    samples = [int(r[2].replace(",", "")) for r in rows]
    last = run.steps[-1]
    assert sum(samples) == int(total[2].replace(",", "")) == last["samples_seen"]
    assert samples == [p["samples_seen"] for p in sources(last)]
    # the losses are the last interval's and the last validation's: weighted by the
    # samples each source had there, their mean is the run's
    final = [e for e in run.events("eval") if e["final"]][-1]
    for column, weights in ((4, sources(last)), (5, sources(final))):
        counts = [p["samples"] for p in weights]
        mean = sum(float(r[column]) * n for r, n in zip(rows, counts, strict=True)) / sum(counts)
        assert mean == pytest.approx(float(total[column]), abs=1.1e-4)  # each to 4 places


def test_megatron_blends_its_data_path_by_weight(runs: Runs) -> None:
    run = runs(*MEGATRON)
    listed = re.search(r"  data_path \.+ \[(.+)\]", run.stdout)
    assert listed
    items = [i.strip(" '") for i in listed.group(1).split(",")]
    weights, prefixes = [float(w) for w in items[0::2]], items[1::2]
    assert weights == pytest.approx(list(run.weights.values())) and sum(weights) == pytest.approx(1)
    for prefix in prefixes:
        assert f"Load the _IndexReader from {prefix}.idx" in run.stdout
    assert "megatron.core.datasets.blended_dataset:Build and save the BlendedDataset indices" in (
        run.stdout
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--task", "dpo", "--mixture", "hh-rlhf:1,ultrafeedback_binarized:1"], "use --dataset"),
        (["--mixture", "fineweb-edu:1"], "fewer than two datasets"),
        (["--mixture", "fineweb-edu:1,no-such-data:1"], "unknown dataset 'no-such-data'"),
        (["--mixture", "fineweb-edu:1,OpenHermes-2.5:1"], "is sft data; pretrain runs blend"),
        (["--mixture", "fineweb-edu:0,dolma:1"], "has no weight"),
        (["--mixture", "fineweb-edu,dolma:1"], "is not NAME:WEIGHT"),
        (["--mixture", "fineweb-edu:1,dolma:1", "--dataset", "dolma"], "give one of them"),
        (["--task", "sft", "--dataset", "fineweb-edu"], "sft runs train on sft or reasoning"),
    ],
)
def test_a_wrong_mixture_is_refused_with_what_is_wrong(args: list[str], said: str) -> None:
    refused = subprocess.run([sys.executable, "-m", "fakehw.train", *args], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert said in refused.stderr and "Traceback" not in refused.stderr


def test_list_datasets_and_help_name_the_mixture() -> None:
    listing = subprocess.run([sys.executable, "-m", "fakehw.train", "--list-datasets"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[2:] if line.strip()}
    assert {"bigcode/starcoderdata", "open-web-math/open-web-math", "BelleGroup/train_3.5M_CN",
            "acme-labs/CryptoThink-zh-80k"} <= set(rows)  # fmt: skip
    assert {"zh", "cryptography"} <= set(rows["acme-labs/CryptoThink-zh-80k"])
    shown = subprocess.run([sys.executable, "-m", "fakehw.train", "--help"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "--mixture NAME:WEIGHT,..." in shown and "--list-datasets" in shown
