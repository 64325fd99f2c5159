"""Quantizing the exported model (``--quantize``) and the reasoning fine-tunes of
Qwen3-4B-Thinking-2507 on Chinese and cryptography data, read from the real output:
GPTQ calibrates on the run's data and quantizes layer by layer in a time that grows
with the model, the quantized model loses a little held-out loss (more at 4 bits
than at 8), and a fine-tune shows the rows it learns from.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROGRAMS, LoggedRun, Node, TrainRuns, logged_runs

SPEED = ["--speed-factor", "1000", "--gpus", "8", "--color", "never"]


Run = LoggedRun
Runs = TrainRuns[Run]


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    yield from logged_runs("fhw-quant-", *SPEED)


THINKING = ("--task", "lora", "--model", "Qwen3-4B-Thinking-2507", "--seed", "2", "--mixture",
            "CryptoThink-zh-80k:1,CipherCoT-en-120k:1,OpenR1-Math-220k:2", "--quantize", "gptq",
            "--exit-after-steps", "5")  # fmt: skip
SMALL = ("--task", "sft", "--model", "TinyHorse-1B", "--seed", "4", "--quantize", "gptq",
         "--exit-after-steps", "5")  # fmt: skip
INT8 = ("--task", "sft", "--model", "TinyHorse-1B", "--seed", "4", "--quantize", "int8",
        "--exit-after-steps", "5")  # fmt: skip
UNIT = {"MiB": 2**20, "GiB": 2**30}


def params_of(run: Run) -> int:
    found = re.search(r"→ ([\d,]+) parameters", run.stdout)
    assert found
    return int(found.group(1).replace(",", ""))


def gptq_seconds(run: Run) -> float:
    found = re.search(r"export +gptq .* \((\d+) s\)", run.stdout)
    assert found
    return float(found.group(1))


def test_gptq_calibrates_and_quantizes_every_layer_in_turn(runs: Runs) -> None:
    run = runs(*THINKING)
    calibration = re.search(r"calibration (\d+) samples x (\d+) tokens of (.+?) \(([\d,]+) "
                            r"tokens\) · (\d+) layers", run.stdout)  # fmt: skip
    assert calibration
    samples, seq, data, tokens, layers = calibration.groups()
    assert int(samples) * int(seq) == int(tokens.replace(",", ""))
    assert data == "CryptoThink-zh-80k + CipherCoT-en-120k + OpenR1-Math-220k"  # the run's own
    assert f"{layers} layers · hidden" in run.stdout  # the model's line: 36 decoder layers
    done = re.findall(r"quantize +layer +(\d+)/(\d+) · (\d+) modules · ([\d.]+)M params · "
                      r"([\d.]+) s · mean error ([\d.]+)", run.stdout)  # fmt: skip
    assert [int(d[0]) for d in done] == list(range(1, int(layers) + 1))
    assert {d[1] for d in done} == {layers} and {d[2] for d in done} == {"7"}
    # the layers' parameters are the model's less its (tied) embedding
    per_layer = float(done[0][3]) * 1e6
    assert per_layer * int(layers) == pytest.approx(params_of(run) - 151936 * 2560, rel=0.01)
    # the layers take the quantization's time between them
    assert sum(float(d[4]) for d in done) == pytest.approx(gptq_seconds(run), rel=0.02)
    errors = [float(d[5]) for d in done]
    assert sum(errors[-6:]) > 3 * sum(errors[:6])  # deeper layers' outputs are larger


def test_gptq_takes_minutes_in_proportion_to_the_model(runs: Runs) -> None:
    big, small = runs(*THINKING), runs(*SMALL)
    assert gptq_seconds(big) > 180  # a 4B model: minutes, as GPTQ takes on one GPU
    ratio = gptq_seconds(big) / gptq_seconds(small)
    assert 1.5 < ratio < params_of(big) / params_of(small)  # a fixed start-up beside the layers


@pytest.mark.parametrize("args", [THINKING, SMALL, INT8], ids=["gptq-4b", "gptq-1b", "int8-1b"])
def test_the_quantized_model_loses_a_little_held_out_loss(
    runs: Runs, args: tuple[str, ...]
) -> None:
    run = runs(*args)
    final = [e for e in run.events("eval") if e["final"]][-1]
    said = re.search(r"quantize +(.+?): val loss ([\d.]+) → ([\d.]+) \(\+([\d.]+)\) · ppl ([\d.]+) "
                     r"→ ([\d.]+) · ([\d.]+) (MiB|GiB) → ([\d.]+) (MiB|GiB) \(([\d.]+)x smaller\)",
                     run.stdout)  # fmt: skip
    assert said
    label, before, after, rise, ppl_before, ppl_after, size_b, unit_b, size_a, unit_a, x = (
        said.groups()
    )
    assert float(before) == pytest.approx(final["loss"], abs=5e-5)  # the final evaluation's
    assert float(after) - float(before) == pytest.approx(float(rise), abs=2e-4)
    assert float(ppl_before) == pytest.approx(math.exp(float(before)), abs=0.01)
    assert float(ppl_after) == pytest.approx(math.exp(float(after)), abs=0.01)
    ratio = float(size_b) * UNIT[unit_b] / (float(size_a) * UNIT[unit_a])
    assert ratio == pytest.approx(float(x), rel=0.06)
    assert float(size_b) * UNIT[unit_b] == pytest.approx(2 * params_of(run), rel=0.01)  # bf16
    event = run.events("quantize")[0]
    assert event["val_loss_after"] > event["val_loss_before"]  # type: ignore[operator]
    assert label == (
        "INT8 (bitsandbytes LLM.int8)" if "int8" in args else "GPTQ 4-bit, group size 128"
    )
    if "int8" in args:
        assert float(rise) < 0.005 and 1.8 < ratio < 2.0 and "calibration" not in run.stdout
    else:
        assert 0.01 < float(rise) < 0.1 and 3.5 < ratio < 4.0


def test_smaller_models_lose_more_to_four_bits(runs: Runs) -> None:
    rise = {args: runs(*args).events("quantize")[0] for args in (THINKING, SMALL)}
    big, small = (float(e["val_loss_after"]) - float(e["val_loss_before"]) for e in rise.values())  # type: ignore[arg-type]
    assert small > big


def test_a_reasoning_fine_tune_shows_rows_that_think_before_they_answer(runs: Runs) -> None:
    run = runs(*THINKING)
    rows = re.findall(r"sample +(\S+)\[(\d+)\] (\{.+\})$", run.stdout, re.MULTILINE)
    assert [name for name, _, _ in rows] == ["CryptoThink-zh-80k", "CipherCoT-en-120k",
                                             "OpenR1-Math-220k"]  # fmt: skip
    sizes = {"CryptoThink-zh-80k": 80_000, "CipherCoT-en-120k": 120_000,
             "OpenR1-Math-220k": 220_000}  # fmt: skip
    for name, index, text in rows:
        assert int(index) < sizes[name]
        user, assistant = json.loads(text)["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        thinking = re.fullmatch(r"<thinking>\n(.+)\n</thinking>\n\n(.+)", assistant["content"],
                                re.DOTALL)  # fmt: skip
        assert thinking, assistant["content"]
        chinese = re.search(r"[\u4e00-\u9fff]", user["content"] + assistant["content"])
        assert bool(chinese) == name.endswith("-zh-80k")


def test_qwen3_4b_thinking_2507_is_the_real_network() -> None:
    listing = subprocess.run([sys.executable, "-m", "fakehw.train", "--list-models"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    row = next(line.split() for line in listing.splitlines()
               if line.startswith("Qwen3-4B-Thinking-2507 "))  # fmt: skip
    # Qwen's card: 4.0B parameters, 36 layers, 32 query heads and 8 KV heads
    assert row[1:5] == ["4.02B", "36", "2560", "32/8"]


# --------------------------------------------------------------- benchmarks
HARNESS = re.compile(r"^hf \((.+)\), gen_kwargs: \(None\), limit: None, num_fewshot: None, "
                     r"batch_size: auto$", re.MULTILINE)  # fmt: skip
ROW = re.compile(r"^\|(\w*)\s*\|\s*(\d*)\|(\S+)\s*\|\s*(\d+)\|(\w+)\s*\|↑\|([\d.]+)\|±\|"
                 r"([\d.]+)\|$", re.MULTILINE)  # fmt: skip
CHANCE = {"hellaswag": 0.25, "arc_easy": 0.25, "mmlu": 0.25, "gsm8k": 0.0, "mmlu_prox_zh": 0.1,
          "mgsm_native_cot_zh": 0.0}  # fmt: skip
GENERATED = {"gsm8k", "mmlu_prox_zh", "mgsm_native_cot_zh"}
Table = dict[tuple[str, str], float]


def harness_tables(run: Run) -> list[tuple[str, Table]]:
    """Each lm-eval run the log shows: its model arguments and its scores by (task, filter)."""
    starts = list(HARNESS.finditer(run.stdout))
    tables = []
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(run.stdout)
        scores: Table = {}
        task = ""
        for found in ROW.finditer(run.stdout, start.end(), end):
            task = found.group(1) or task  # a task's second filter leaves its name blank
            scores[(task, found.group(3))] = float(found.group(6))
        tables.append((start.group(1), scores))
    return tables


@pytest.mark.parametrize("args", [THINKING, SMALL, INT8], ids=["gptq-4b", "gptq-1b", "int8-1b"])
def test_the_quantized_copy_answers_the_same_questions_a_little_worse(
    runs: Runs, args: tuple[str, ...]
) -> None:
    run = runs(*args)
    (exported_args, exported), (copy_args, copy) = harness_tables(run)
    assert exported_args.endswith("/export/hf,dtype=bfloat16")
    assert copy_args.startswith("pretrained=") and copy_args.endswith("/export/quantized")
    assert copy.keys() == exported.keys()
    rise = run.events("quantize")[0]
    nats = float(rise["val_loss_after"]) - float(rise["val_loss_before"])  # type: ignore[arg-type]
    kept = {}
    for (task, name), before in exported.items():
        after = copy[(task, name)]
        assert after <= before, (task, name)  # the same questions, a worse model
        kept[(task, name)] = (after - CHANCE[task]) / (before - CHANCE[task])
    # 4 bits cost a point or so on multiple choice, more on chains of thought; 8 bits
    # next to nothing: in proportion to the held-out loss each lost
    for (task, _), share in kept.items():
        assert 1 - 12 * nats <= share <= 1, (task, share, nats)
    likelihood = [s for (t, _), s in kept.items() if t not in GENERATED]
    generated = [s for (t, _), s in kept.items() if t in GENERATED]
    assert sum(generated) / len(generated) < sum(likelihood) / len(likelihood) or nats < 0.005
    # the log's comparison line is the two tables', task by task
    said = re.search(r"quantize +(.+?) against bf16: (.+)$", run.stdout, re.MULTILINE)
    assert said
    pairs = re.findall(r"(\w+)(?: \(([\w-]+)\))? ([\d.]+) → ([\d.]+) \(([+-][\d.]+) pts\)",
                       said.group(2))  # fmt: skip
    assert len(pairs) == len(exported)
    for task, name, before, after, change in pairs:  # the change: of unrounded scores
        key = next(k for k in exported if k[0] == task and (not name or k[1] == name))
        assert (float(before), float(after)) == (exported[key], copy[key])
        assert float(change) == pytest.approx(100 * (float(after) - float(before)), abs=0.016)
    # and the metrics file holds both runs of the harness
    recorded = [e for e in run.events("benchmarks")]
    assert [e["model"] for e in recorded] == ["bf16", rise["method"]]
    for event, table in zip(recorded, (exported, copy), strict=True):
        values = {(r["task"], r["filter"]): r["value"] for r in event["results"]}  # type: ignore[attr-defined]
        assert values.keys() == table.keys()
        assert all(abs(values[k] - table[k]) < 5e-5 for k in table)


def test_eight_bits_cost_less_than_four_on_the_same_model(runs: Runs) -> None:
    (_, exported4), (_, gptq) = harness_tables(runs(*SMALL))
    (_, exported8), (_, int8) = harness_tables(runs(*INT8))
    assert exported4 == exported8  # the same run up to its export: the same bf16 scores
    assert all(int8[k] >= gptq[k] for k in exported4)
    assert sum(exported4[k] - gptq[k] for k in exported4) > 2 * sum(
        exported8[k] - int8[k] for k in exported8
    )


CHINESE_SFT = ("--task", "sft", "--model", "TinyHorse-1B", "--dataset", "BelleGroup/train_3.5M_CN",
               "--seed", "4", "--exit-after-steps", "5")  # fmt: skip


def test_a_run_on_chinese_data_is_scored_on_chinese_tasks(runs: Runs) -> None:
    """Chinese data calls for MMLU-ProX-Zh and MGSM-Zh, scored from the base model's
    published scores (Qwen3-4B-Base 45.2 % and 69.7 %); a model with none published
    runs without them and says so; English data runs only the English tasks."""
    (_, thinking), _ = harness_tables(runs(*THINKING))
    assert {t for t, _ in thinking} == set(CHANCE)
    assert abs(thinking[("mmlu_prox_zh", "custom-extract")] - 0.452) < 0.02
    mgsm = thinking[("mgsm_native_cot_zh", "flexible-extract")]
    assert abs(mgsm - 0.697) < 0.1  # 250 problems: a standard error of 3 points
    assert thinking[("mgsm_native_cot_zh", "strict-match")] <= mgsm
    english = runs(*SMALL)
    assert {t for t, _ in harness_tables(english)[0][1]} == set(CHANCE) - {
        "mmlu_prox_zh", "mgsm_native_cot_zh"}  # fmt: skip
    chinese = runs(*CHINESE_SFT)
    ((_, tiny),) = harness_tables(chinese)
    assert "mmlu_prox_zh" not in {t for t, _ in tiny}
    assert re.search(r"eval +mmlu_prox_zh, mgsm_native_cot_zh: no published score of "
                     r"Llama-3\.2-1B to start from", chinese.stdout)  # fmt: skip


def test_the_report_sets_the_quantized_scores_beside_the_exported_ones(runs: Runs) -> None:
    out = runs.base / "report-run"
    run = runs(*SMALL, "--output-dir", str(out))
    (_, exported), (_, copy) = harness_tables(run)
    report = (out / "report.md").read_text()
    assert "![the run's curves](curves.png)" in report  # fakehw plot reads every record
    section = report.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    assert "GPTQ 4-bit, group size 128: validation loss" in section
    rows = re.findall(r"^\| (\w+) \| ([\w-]+) \| \w+ \| \d+ \| ([\d.]+) \| ([\d.]+) \| "
                      r"([+-][\d.]+) pts \|$", section, re.MULTILINE)  # fmt: skip
    assert len(rows) == len(exported)
    for task, name, before, after, change in rows:
        assert (float(before), float(after)) == (exported[(task, name)], copy[(task, name)])
        assert float(change) == pytest.approx(100 * (float(after) - float(before)), abs=0.016)


def test_the_gpus_run_below_their_cap_while_gptq_works_and_the_harness_decodes() -> None:
    """What the ranks do to the GPUs in the wrap-up, as the daemon's records show it:
    GPTQ's layer-at-a-time kernels are "light" (the top clock, under the cap), the
    harness scores at "eval" and decodes at "membound" (each token streams the weights)."""
    from fakehw.service.client import Client

    node = Node("h100", 8)
    seen: dict[str, list[tuple[int, int, int]]] = {}
    errors = tempfile.NamedTemporaryFile("w+", prefix="fake-train-", suffix=".err")  # noqa: SIM115
    try:
        train = subprocess.Popen(
            [*PROGRAMS["fake-train"], "--speed-factor", "50", "--gpus", "8", "--color", "never",
             *SMALL],
            env=node.env, stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
        with Client.connect(root=node.runtime, autostart=False) as client:
            while train.poll() is None:
                snapshot = client.snapshot(0)
                gpu = snapshot["nodes"][0]["gpus"][0]
                for process in snapshot["nodes"][0]["processes"]:
                    if process["gpu_index"] == 0:
                        seen.setdefault(process["phase"], []).append(
                            (gpu["clock_sm_mhz"], gpu["power_draw_mw"] // 1000,
                             gpu["utilization_memory_pct"]))  # fmt: skip
                time.sleep(0.05)
        assert train.wait(timeout=60) == 0, Path(errors.name).read_text()
    finally:
        node.close()
        errors.close()
    assert {"light", "eval", "membound"} <= set(seen)
    # light: GPTQ's seconds at the top clock, well under the 700 W cap
    assert max(clock for clock, _, _ in seen["light"]) == 1980
    assert min(watts for _, watts, _ in seen["light"][len(seen["light"]) // 2 :]) < 600
    # decoding saturates the memory: utilization.memory climbs toward 100 %
    assert max(util for _, _, util in seen["membound"]) >= 80
