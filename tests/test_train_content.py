"""What fake-train's runs show beyond loss and learning rate, read from their real
output as an ML engineer reads it: model probes, per-layer gradients and clipping,
early stopping and the epoch's callbacks. Each relation is checked on the printed
figures (and the JSONL and TensorBoard files they are written to), across seeds,
styles and tasks: what real values obey, never the code's constants.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Records, TrainRuns

SPEED = ["--speed-factor", "1000", "--gpus", "8", "--color", "never"]


class Run(Records):
    def __init__(self, args: tuple[str, ...], stdout: str, stderr: str,
                 records: list[dict[str, object]], out: Path) -> None:  # fmt: skip
        super().__init__(records)
        self.args, self.stdout, self.stderr, self.out = args, stdout, stderr, out


Runs = TrainRuns[Run]


def play(runs: Runs, args: tuple[str, ...], index: int) -> Run:
    metrics = runs.base / f"m{index}.jsonl"
    out = runs.base / f"out{index}"
    extra = ["--output-dir", str(out)] if "--output-dir" in args else []
    args_run = tuple(a for a in args if a != "--output-dir")
    result = runs.play(*SPEED, *args_run, *extra, "--metrics-jsonl", str(metrics))
    return Run(args, result.stdout, result.stderr, Records.read(metrics), out)


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    played = TrainRuns(Path(tempfile.mkdtemp(prefix="fhw-content-")), play)
    yield played
    played.stop()


# The runs each test reads: styles x tasks x seeds.
PRETRAIN = ("--seed", "5", "--exit-after-steps", "1200", "--probe-every", "200", "--output-dir")
MEGATRON = ("--style", "megatron", "--seed", "11", "--exit-after-steps", "800",
            "--probe-every", "200", "--output-dir")  # fmt: skip
HF_SFT = ("--style", "hf", "--task", "sft", "--seed", "3", "--exit-after-steps", "600",
          "--probe-every", "150", "--output-dir")  # fmt: skip
DS_LORA = ("--style", "deepspeed", "--task", "lora", "--seed", "7", "--exit-after-steps", "400",
           "--probe-every", "100", "--output-dir")  # fmt: skip
SPIKE = ("--seed", "1", "--exit-after-steps", "1600")  # this seed's pretraining spikes at 1569
# seed 4: a 1B model on ultrachat, three epochs of 276 steps
EARLY = ("--task", "sft", "--seed", "4", "--early-stopping", "3")
HF_EARLY = ("--style", "hf", "--task", "sft", "--seed", "4", "--early-stopping", "3")
SFT_FULL = ("--task", "sft", "--seed", "4", "--output-dir")  # three epochs to the end


# ------------------------------------------------------------------ parsing
NUM = r"([-+0-9.eE]+)"


def probes_printed(run: Run) -> list[dict[str, float]]:
    """Each probe as the style printed it: {figure: value}, layers as layer_N/...."""
    style = run.args[run.args.index("--style") + 1] if "--style" in run.args else "default"
    found: list[dict[str, float]] = []
    if style == "hf":
        for line in run.stdout.splitlines():
            if line.startswith("{'probe/"):
                logs = ast.literal_eval(line)
                found.append({k[6:]: float(v) for k, v in logs.items() if k.startswith("probe/")})
        return found
    if style in ("megatron", "deepspeed"):
        for line in run.stdout.splitlines():
            head = re.match(r" probe at iteration +(\d+) \| (.*)", line)
            if not head:
                continue
            fields = dict(re.findall(r"([a-z0-9 ]+): ([^|]+) \|", "| " + head.group(2)))
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            if "layer" in fields:
                n = fields["layer"]
                found[-1].update({
                    f"layer_{n}/cosine_sim_intra": float(fields["cosine sim intra"]),
                    f"layer_{n}/cosine_sim_inter": float(fields["cosine sim inter"]),
                    f"layer_{n}/participation_ratio": float(fields["participation ratio"]),
                })  # fmt: skip
            else:
                found.append({
                    "step": float(head.group(1)), "entropy": float(fields["entropy"]),
                    "top1_acc": float(fields["top1 acc"]), "top5_acc": float(fields["top5 acc"]),
                    "confidence_gap": float(fields["confidence gap"]),
                    "topk_mass": float(fields["top10 mass"]),
                    "p_true_mean": float(fields["p true mean"]),
                })  # fmt: skip
        return found
    for line in run.stdout.splitlines():
        head = re.search(
            r"probe +step (\d+) · ([\d,]+) held-out tokens · entropy ([\d.]+) nats \(ln V "
            r"([\d.]+)\) · top-1 ([\d.]+)% · top-5 ([\d.]+)% · confidence gap ([\d.]+) · top-10 "
            r"mass ([\d.]+) · p\(true\) ([\d.]+)",
            line,
        )
        if head:
            g = head.groups()
            found.append({
                "step": float(g[0]), "entropy": float(g[2]), "ln_vocab": float(g[3]),
                "top1_acc": float(g[4]) / 100, "top5_acc": float(g[5]) / 100,
                "confidence_gap": float(g[6]), "topk_mass": float(g[7]),
                "p_true_mean": float(g[8]),
            })  # fmt: skip
            continue
        layer = re.search(
            r"probe +layer +(\d+): cosine intra ([\d.]+) · inter ([\d.]+) · participation "
            r"ratio ([\d.]+) of (\d+)",
            line,
        )
        if layer:
            n = layer.group(1)
            found[-1].update({
                f"layer_{n}/cosine_sim_intra": float(layer.group(2)),
                f"layer_{n}/cosine_sim_inter": float(layer.group(3)),
                f"layer_{n}/participation_ratio": float(layer.group(4)),
                "hidden": float(layer.group(5)),
            })  # fmt: skip
    return found


def seq_of(run: Run) -> int:
    """The run's sequence length, from its run.json."""
    described = json.loads((run.out / "run.json").read_text())
    return int(described["plan"]["seq"])


def model_shape(run: Run) -> tuple[int, int]:
    """(layers, hidden) of the run's model (named in its run.json) as --list-models gives it."""
    name = json.loads((run.out / "run.json").read_text())["config"]["model"]
    listing = subprocess.run([sys.executable, "-m", "fakehw.train", "--list-models"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    lines = listing.splitlines()
    header, rule = lines[0], lines[1]  # tabulate's "simple" table: columns under dashes
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    names = [header[a:b].strip() for a, b in spans]
    for line in lines[2:]:
        cells = dict(zip(names, (line[a:b].strip() for a, b in spans), strict=True))
        if cells["model"] == name:
            return int(cells["layers"]), int(cells["hidden"])
    raise AssertionError(f"{name} not in --list-models")


# ------------------------------------------------------------- 1. probes
PROBED = [PRETRAIN, MEGATRON, HF_SFT, DS_LORA]


@pytest.mark.parametrize("args", PROBED, ids=["default-pretrain", "megatron-pretrain",
                                              "hf-sft", "deepspeed-lora"])  # fmt: skip
def test_probe_figures_obey_what_a_distribution_and_a_loss_allow(
    runs: Runs, args: tuple[str, ...]
) -> None:
    run = runs(*args)
    printed = probes_printed(run)
    written = run.events("probe")
    assert len(printed) == len(written) >= 2, run.stdout[-2000:]
    for shown, record in zip(printed, written, strict=True):
        vocab, hidden = int(record["vocab"]), int(record["hidden"])  # type: ignore[call-overload]
        loss = float(record["loss"])  # type: ignore[arg-type]
        # the printed figures are the written ones
        for key in ("entropy", "top1_acc", "top5_acc", "confidence_gap", "topk_mass",
                    "p_true_mean"):  # fmt: skip
            assert shown[key] == pytest.approx(float(record[key]), abs=6e-4, rel=6e-4), key  # type: ignore[arg-type]
        assert 0 < shown["entropy"] <= math.log(vocab)
        assert 0 < shown["top1_acc"] <= shown["top5_acc"] <= 1
        assert shown["top5_acc"] <= shown["topk_mass"] + 0.05  # calibrated: close to the mass
        assert shown["confidence_gap"] < shown["topk_mass"] <= 1
        # the true token's mean probability is at least the geometric mean exp(-loss)
        assert math.exp(-loss) <= record["p_true_mean"] <= math.exp(-loss / 4)  # type: ignore[operator]
        layers = [int(k.split("/")[0][6:]) for k in shown if k.endswith("/cosine_sim_intra")]
        assert len(layers) == 3 and layers[0] == 0  # first, middle, last
        for n in layers:
            intra, inter = (
                shown[f"layer_{n}/cosine_sim_intra"],
                shown[f"layer_{n}/cosine_sim_inter"],
            )
            assert 0 < inter < intra < 1
            assert 1 < shown[f"layer_{n}/participation_ratio"] < hidden
    # the probe's loss is that of 64 held-out sequences: near the validation at the same
    # step, within four standard errors of a sequence's spread (~0.3 nats)
    evals = {e["step"]: e["loss"] for e in run.events("eval")}
    for record in written:
        sequences = int(record["tokens"]) // seq_of(run)  # type: ignore[call-overload]
        assert sequences == 64
        if record["step"] in evals:
            assert record["loss"] == pytest.approx(evals[record["step"]], abs=4 * 0.3 / 8)


@pytest.mark.parametrize("args", [PRETRAIN, MEGATRON], ids=["default", "megatron"])
def test_probes_follow_the_loss_as_training_goes(runs: Runs, args: tuple[str, ...]) -> None:
    written = runs(*args).events("probe")
    losses = [float(p["loss"]) for p in written]  # type: ignore[arg-type]
    assert losses[-1] < losses[0]
    for earlier, later in itertools.pairwise(written):
        if later["loss"] < earlier["loss"]:  # type: ignore[operator]
            assert later["entropy"] < earlier["entropy"]  # type: ignore[operator]
            assert later["top1_acc"] > earlier["top1_acc"]  # type: ignore[operator]
            assert later["p_true_mean"] > earlier["p_true_mean"]  # type: ignore[operator]
    # training concentrates the upper layers' representations: the last layer's
    # participation ratio falls, its similarity across sequences grows
    first, last = written[0]["layers"], written[-1]["layers"]  # type: ignore[index]
    assert last[-1]["participation_ratio"] < first[-1]["participation_ratio"]  # type: ignore[index]
    assert last[-1]["cosine_sim_inter"] > first[-1]["cosine_sim_inter"]  # type: ignore[index]


def test_probe_layers_are_the_models_first_middle_and_last(runs: Runs) -> None:
    run = runs(*PRETRAIN)
    layers_count, hidden = model_shape(run)
    printed = probes_printed(run)[0]
    assert printed["hidden"] == hidden
    assert printed["ln_vocab"] == pytest.approx(math.log(int(run.events("probe")[0]["vocab"])),  # type: ignore[call-overload]
                                                abs=0.01)  # fmt: skip
    indices = sorted({int(k.split("/")[0][6:]) for k in printed if k.startswith("layer_")})
    assert indices == [0, layers_count // 2, layers_count - 1]


def test_probes_and_gradients_reach_tensorboard(runs: Runs) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for args, tag in ((PRETRAIN, "probe/entropy"), (HF_SFT, "train/probe/entropy")):
        run = runs(*args)
        event_files = sorted(run.out.rglob("events.out.tfevents.*"))
        assert event_files
        tags: set[str] = set()
        values: dict[int, float] = {}
        for path in event_files:
            acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
            acc.Reload()
            tags |= set(acc.Tags()["scalars"])
            if tag in acc.Tags()["scalars"]:
                values.update({e.step: e.value for e in acc.Scalars(tag)})
        written = {int(p["step"]): float(p["entropy"]) for p in run.events("probe")}  # type: ignore[call-overload, arg-type]
        assert values.keys() == written.keys()
        for step, value in written.items():
            assert values[step] == pytest.approx(value, rel=1e-6)
        if args is PRETRAIN:
            assert {"train/clip_rate", "grad_norm/embed_tokens", "grad_norm/layers.0"} <= tags


def test_probing_changes_nothing_else_in_the_run(runs: Runs) -> None:
    """Probes have a random stream of their own: the same seed trains the same curve."""
    with_probes = runs(*MEGATRON)
    without = runs(
        "--style", "megatron", "--seed", "11", "--exit-after-steps", "800", "--probe-every", "0"
    )
    assert not probes_printed(without)
    losses = [s["loss"] for s in with_probes.steps]
    assert losses == [s["loss"] for s in without.steps]


def test_framework_styles_probe_only_when_asked_and_dpo_refuses(runs: Runs) -> None:
    plain = runs("--style", "hf", "--task", "sft", "--seed", "3", "--exit-after-steps", "150")
    assert not plain.events("probe") and "probe/" not in plain.stdout
    refused = subprocess.run([sys.executable, "-m", "fakehw.train", "--task", "dpo",
                              "--probe-every", "10", *SPEED], capture_output=True, text=True,
                             env=runs.env(), timeout=120, check=False)  # fmt: skip
    assert refused.returncode == 2
    assert "preference loss" in refused.stderr and "Traceback" not in refused.stderr


# ------------------------------------------------------------ 2. gradients
@pytest.mark.parametrize("args", [PRETRAIN, HF_SFT, DS_LORA], ids=["pretrain", "sft", "lora"])
def test_layer_gradient_norms_add_up_to_the_global_norm(runs: Runs, args: tuple[str, ...]) -> None:
    run = runs(*args)
    layers_count, _ = model_shape(run)
    steps = [s for s in run.steps if "grad_norm_layers" in s]
    assert steps
    for step in steps:
        groups: dict[str, float] = step["grad_norm_layers"]  # type: ignore[assignment]
        total = math.sqrt(sum(v * v for v in groups.values()))
        assert total == pytest.approx(step["grad_norm"], rel=1e-9)
        decoder = [g for g in groups if g.startswith("layers.")]
        assert decoder == [f"layers.{i}" for i in range(layers_count)]
        if "lora" in args:
            assert set(groups) == set(decoder)  # only the adapters learn
        else:
            assert {"embed_tokens", "norm"} <= set(groups)


@pytest.mark.parametrize("args", [PRETRAIN, HF_SFT, MEGATRON], ids=["pretrain", "sft", "megatron"])
def test_clipping_counts_the_steps_above_the_max_norm(runs: Runs, args: tuple[str, ...]) -> None:
    run = runs(*args)
    for step in run.steps:
        rate, coef = float(step["clip_rate"]), float(step["clip_coef"])  # type: ignore[arg-type]
        assert 0 <= rate <= 1 and 0 < coef <= 1
        if step["grad_norm"] > 1.0:  # type: ignore[operator]
            assert rate > 0 and coef < 1  # this step itself was clipped
        if rate == 0:
            assert coef == 1.0
    reports = run.events("gradients")
    assert reports
    for report in reports:
        assert report["clip_rate"] == pytest.approx(report["clipped"] / report["steps"])  # type: ignore[operator]
        assert math.sqrt(sum(v * v for v in report["layers"].values())) == pytest.approx(  # type: ignore[union-attr]
            report["grad_norm"], rel=1e-9)  # fmt: skip
    # early steps' gradients are large: the first report has clipped more than the last
    assert reports[0]["clip_rate"] >= reports[-1]["clip_rate"]


def test_the_printed_gradient_report_is_the_written_one(runs: Runs) -> None:
    run = runs(*PRETRAIN)
    lines = re.findall(
        r"grads +step (\d+) · norm ([\d.]+) over (\d+) groups · largest: (.*?) · clipped (\d+) "
        r"of the last (\d+) steps \(([\d.]+)%, mean clip coef ([\d.]+), max norm ([\d.]+)\)",
        run.stdout,
    )
    reports = run.events("gradients")
    assert len(lines) == len(reports) >= 2
    for line, report in zip(lines, reports, strict=True):
        step, norm, groups, largest, clipped, steps, pct, coef, max_norm = line
        assert int(step) == report["step"] and int(groups) == len(report["layers"])  # type: ignore[arg-type]
        assert float(norm) == pytest.approx(report["grad_norm"], abs=6e-4)
        assert int(clipped) == report["clipped"] and int(steps) == report["steps"]
        assert float(pct) == pytest.approx(100 * int(clipped) / int(steps), abs=0.06)
        assert float(max_norm) == 1.0
        assert float(coef) == pytest.approx(report["clip_coef"], abs=6e-4)
        top = sorted(report["layers"].items(), key=lambda kv: -kv[1])[:4]  # type: ignore[union-attr]
        assert largest == ", ".join(f"{name} {value:.3f}" for name, value in top)


def test_a_loss_spike_shows_in_the_layers_its_message_names(runs: Runs) -> None:
    run = runs(*SPIKE)
    spikes = [i for i in run.events("incident") if i["kind"] == "loss_spike"]
    assert spikes, "this seed spikes"
    for spike in spikes:
        norms: dict[str, float] = spike["layer_grad_norms"]  # type: ignore[assignment]
        named: list[str] = spike["layers"]  # type: ignore[assignment]
        assert math.sqrt(sum(v * v for v in norms.values())) == pytest.approx(spike["grad_norm"])
        burst = sum(norms[n] ** 2 for n in named)
        assert burst > 0.8 * spike["grad_norm"] ** 2  # type: ignore[operator]
        assert len(named) <= 4
        assert all(norms[n] > max(v for k, v in norms.items() if k not in named) for n in named)
        line = re.search(rf"loss spike at step {spike['step']}: .*\(in ([^)]+)\) clipped to 1.0",
                         run.stdout)  # fmt: skip
        assert line, run.stdout[-3000:]
        layers = sorted(int(n.split(".")[1]) for n in named if n.startswith("layers."))
        assert layers == list(range(layers[0], layers[-1] + 1))  # a burst's blocks are adjacent
        span = f"layers.{layers[0]}-{layers[-1]}" if len(layers) > 1 else f"layers.{layers[0]}"
        assert span in line.group(1)


# ------------------------------------------------------- 3. the callbacks
def evals_of(run: Run) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in run.events("eval") if not e["final"]]  # type: ignore[call-overload, arg-type]


@pytest.mark.parametrize("args", [EARLY, HF_EARLY], ids=["default", "hf"])
def test_early_stopping_stops_after_patience_and_restores_the_best(
    runs: Runs, args: tuple[str, ...]
) -> None:
    run = runs(*args)
    patience = 3
    evals = evals_of(run)
    stop = run.events("early_stop")
    assert len(stop) == 1
    stop_step = int(stop[0]["step"])  # type: ignore[call-overload]
    # replay the rule on the printed evaluations: it fires first at the stop step
    best, best_step, waited = math.inf, 0, 0
    for step, loss in evals:
        if loss < best:
            best, best_step, waited = loss, step, 0
        else:
            waited += 1
        if waited == patience:
            assert step == stop_step
            break
    else:
        raise AssertionError("the rule never fires on these evaluations")
    assert stop[0]["best_step"] == best_step and stop[0]["best"] == best
    assert evals[-1][0] == stop_step and max(s["step"] for s in run.steps) <= stop_step  # type: ignore[type-var]
    assert re.search(rf"run stopped early \(the validation loss stopped improving\): "
                     rf"{stop_step:,} of", run.stdout)  # fmt: skip
    # a checkpoint at every evaluation; the best one is what is loaded back and evaluated
    saved = {int(c["step"]) for c in run.events("checkpoint")}  # type: ignore[call-overload]
    assert {s for s, _ in evals} <= saved
    final = [e for e in run.events("eval") if e["final"]]
    assert final and final[0]["loss"] == best  # the same weights on the same held-out set
    name = f"checkpoint-{best_step}" if "hf" in args else f"step_{best_step:07d}"
    assert str(stop[0]["best_path"]).endswith(name)
    if "hf" in args:
        assert f"early stopping at step {stop_step}: eval_loss has not improved" in run.stderr
        final_print = [line for line in run.stdout.splitlines() if line.startswith("{'eval_loss")]
        printed = ast.literal_eval(final_print[-1])  # the script's print(trainer.evaluate())
        assert printed["eval_loss"] == pytest.approx(best, rel=1e-6)  # float32
    else:
        assert re.search(rf"EarlyStopping: eval_loss {evals[-1][1]:.4f} at step {stop_step} did "
                         rf"not improve on {best:.4f} \(step {best_step}\) for 3 evaluations",
                         run.stdout)  # fmt: skip
        assert f"loaded the best model back from {stop[0]['best_path']}" in run.stdout
        assert f"final val loss {best:.4f}" in run.stdout


def test_held_out_loss_has_a_minimum_and_rises_as_a_fine_tune_overfits(runs: Runs) -> None:
    run = runs(*SFT_FULL)
    evals = evals_of(run)
    epochs = run.events("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    losses = [loss for _, loss in evals]
    lowest = losses.index(min(losses))
    assert 0 < lowest < len(losses) - 3  # falls, then climbs in the last epoch
    last_epoch = [loss for step, loss in evals if step > int(epochs[1]["step"])]  # type: ignore[call-overload]
    assert last_epoch[-1] > min(losses) + 0.01
    # and the training loss goes on falling below it: the gap grows
    train = [e["train_loss"] for e in epochs]
    assert train[0] > train[1] > train[2]  # type: ignore[operator]
    gaps = [float(e["val_loss"]) - float(e["train_loss"]) for e in epochs]  # type: ignore[arg-type]
    assert gaps[0] < gaps[1] < gaps[2]


def test_epoch_callbacks_report_what_the_steps_add_up_to(runs: Runs) -> None:
    run = runs(*SFT_FULL)
    tokens_per_step = int(re.search(r"= ([\d,]+) tokens", run.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    peak, warmup = re.search(r"lr (\S+) cosine, warmup (\d+)", run.stdout).groups()  # type: ignore[union-attr]
    total = int(run.events("epoch")[-1]["step"])  # type: ignore[call-overload]
    lines = re.findall(
        r"MetricsLogger: epoch (\d)/3 done at step ([\d,]+) · ([\d,]+) steps · train loss "
        r"([\d.]+) \(epoch mean\) · val loss ([\d.]+) \(best ([\d.]+) at step (\d+)\) · (\S+) "
        r"tokens",
        run.stdout,
    )
    epochs = run.events("epoch")
    assert len(lines) == len(epochs) == 3
    previous = 0
    for line, epoch in zip(lines, epochs, strict=True):
        step = int(line[1].replace(",", ""))
        assert int(line[2].replace(",", "")) == step - previous == epoch["steps"]
        assert epoch["tokens"] == epoch["steps"] * tokens_per_step  # type: ignore[operator]
        assert float(line[3]) == pytest.approx(float(epoch["train_loss"]), abs=6e-5)  # type: ignore[arg-type]
        evals = [(s, v) for s, v in evals_of(run) if s <= step]
        assert float(line[4]) == pytest.approx(evals[-1][1], abs=6e-5)
        best_step, best = min(evals, key=lambda e: e[1])
        assert float(line[5]) == pytest.approx(best, abs=6e-5) and int(line[6]) == best_step
        previous = step
    # the epochs' means, weighted by their steps, are the run's mean training loss
    weighted = sum(float(e["train_loss"]) * int(e["steps"]) for e in epochs)  # type: ignore[arg-type, call-overload]
    run_mean = re.search(r"mean over the run ([\d.]+)", (run.out / "report.md").read_text())
    assert run_mean and weighted / total == pytest.approx(float(run_mean.group(1)), abs=6e-5)
    # the scheduler callback's rate is the schedule's at the next epoch's first step
    lrs = re.findall(r"LRSchedulerCallback: epoch (\d) starts at lr (\S+) \(cosine", run.stdout)
    assert [int(e) for e, _ in lrs] == [2, 3]
    for (epoch_number, lr), epoch in zip(lrs, epochs, strict=False):
        step = int(epoch["step"]) + 1  # type: ignore[call-overload]
        progress = (step - int(warmup)) / (total - int(warmup))
        floor = 0.1 * float(peak)
        expected = floor + (float(peak) - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        assert float(lr) == pytest.approx(expected, rel=1e-3), epoch_number


def test_help_names_the_new_options() -> None:
    shown = subprocess.run([sys.executable, "-m", "fakehw.train", "--help"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "--probe-every STEPS" in shown and "--early-stopping PATIENCE" in shown


# ---------------------------------------------- 8. anomalies and the report
DIVERGE = ("--seed", "5", "--exit-after-steps", "1300", "--inject", "loss-divergence@1100",
           "--output-dir")  # fmt: skip
PLATEAU = ("--task", "sft", "--seed", "5", "--exit-after-steps", "1500",
           "--inject", "loss-plateau@400")  # fmt: skip
HEALTHY = [PRETRAIN, MEGATRON, HF_SFT, DS_LORA, SPIKE, EARLY, SFT_FULL]


def incidents(run: Run, kind: str) -> list[dict[str, object]]:
    return [i for i in run.events("incident") if i["kind"] == kind]


def warning_lines(run: Run) -> list[str]:
    return [line.split("warning    ", 1)[1] for line in run.stdout.splitlines()
            if "] warning    " in line]  # fmt: skip


def test_a_divergence_is_found_and_rolled_back_past_its_data(runs: Runs) -> None:
    run = runs(*DIVERGE)
    found = incidents(run, "loss_divergence")
    assert len(found) == 1
    divergence = found[0]
    step = int(divergence["step"])  # type: ignore[call-overload]
    assert 1100 < step <= 1100 + 60  # found within a few dozen steps of its start
    assert float(divergence["mean"]) > 1.15 * float(divergence["best"])  # type: ignore[arg-type]
    # its gradients blew up first: one gradient explosion, told once, before it
    explosions = incidents(run, "grad_explosion")
    assert len(explosions) == 1 and 1100 < int(explosions[0]["step"]) <= step  # type: ignore[call-overload]
    assert float(explosions[0]["ratio"]) > 10  # type: ignore[arg-type]
    # rolled back to the last checkpoint before it, the batches after it skipped
    saved = [int(c["step"]) for c in run.events("checkpoint") if int(c["step"]) < step]  # type: ignore[call-overload]
    rollback = incidents(run, "rollback")[0]
    assert rollback["to"] == max(saved) and rollback["skip_to"] == step
    assert rollback["batches"] == step - max(saved)
    plan = json.loads((run.out / "run.json").read_text())["plan"]
    assert rollback["samples"] == rollback["batches"] * plan["global_batch"]  # type: ignore[operator]
    # the steps go back and train on: the run trains the skipped batches' steps again,
    # on other data, and its loss is back where it was
    trained = int(run.args[run.args.index("--exit-after-steps") + 1]) + int(rollback["batches"])  # type: ignore[call-overload]
    report = (run.out / "report.md").read_text()
    assert f"({trained:,} trained by this run)" in report
    assert f"  report: {run.out / 'report.md'}" in run.stdout.splitlines()  # the log says where
    after = [s for s in run.steps if s["time"] > divergence["time"]]  # type: ignore[operator]
    assert after and after[-1]["loss"] < 1.1 * float(divergence["best"])  # type: ignore[arg-type, operator]
    # the log says both, and the report lists them in the same words
    said = warning_lines(run)
    assert any(line.startswith(f"loss divergence at step {step}:") for line in said)
    assert any(
        line.startswith(f"rolling back to the checkpoint of step {max(saved)} ") for line in said
    )
    for line in said:
        assert f"): {line}" in report


def test_a_plateau_is_found_while_the_learning_rate_is_high(runs: Runs) -> None:
    run = runs(*PLATEAU)
    found = incidents(run, "no_convergence")
    assert found
    first = found[0]
    assert int(first["step"]) > 400 + 3 * int(first["window"])  # type: ignore[call-overload]
    assert float(first["lr_share"]) >= 0.5  # type: ignore[arg-type]
    assert float(first["mean"]) >= float(first["best"]) - float(first["margin"])  # type: ignore[arg-type]
    assert 0 < float(first["margin"]) < 0.02 * float(first["best"])  # type: ignore[arg-type]
    assert int(first["best_step"]) < int(first["step"]) - 3 * int(first["window"]) + 1  # type: ignore[call-overload]
    assert any(
        line.startswith(f"no convergence at step {first['step']}:") for line in warning_lines(run)
    )


@pytest.mark.parametrize("args", HEALTHY, ids=["pretrain", "megatron", "hf-sft", "ds-lora",
                                               "spike", "early-stop", "sft-3-epochs"])  # fmt: skip
def test_a_healthy_run_raises_no_false_alarm(runs: Runs, args: tuple[str, ...]) -> None:
    run = runs(*args)
    kinds = {str(i["kind"]) for i in run.events("incident")}
    assert not kinds & {"loss_divergence", "rollback", "no_convergence"}, kinds


def test_the_monitors_spike_and_slow_rank_follow_their_numbers(runs: Runs) -> None:
    spike = incidents(runs(*SPIKE), "loss_spike")[0]
    assert float(spike["loss"]) > 1.06 * float(spike["mean"])  # type: ignore[arg-type]
    recovered = [i for i in incidents(runs(*SPIKE), "recovered") if i["step"] > spike["step"]]  # type: ignore[operator]
    assert recovered and float(recovered[0]["loss"]) <= 1.02 * float(spike["mean"])  # type: ignore[arg-type]
    slow = [i for args in HEALTHY for i in incidents(runs(*args), "slow_rank") if "step_s" in i]
    assert slow, "these runs have stragglers"
    for i in slow:
        assert float(i["slowdown"]) == pytest.approx(
            100 * (float(i["step_s"]) / float(i["median_s"]) - 1)
        )  # type: ignore[arg-type]
        assert float(i["step_s"]) > 1.15 * float(i["median_s"])  # type: ignore[arg-type]
        assert i["host"] == f"dgx-h100-{int(i['rank']) // 8 + 1:02d}"  # type: ignore[call-overload]


def test_the_report_holds_the_runs_own_figures_and_curves(runs: Runs) -> None:
    for args in (PRETRAIN, HF_SFT, DIVERGE):
        run = runs(*args)
        report = (run.out / "report.md").read_text()
        assert "![the run's curves](curves.png)" in report
        assert (run.out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        final = [e for e in run.events("eval") if e["final"]]
        assert f"final evaluation {float(final[-1]['loss']):.4f}" in report  # type: ignore[arg-type]
        last = run.steps[-1]
        assert f"→ {float(last['loss']):.4f} at step {int(last['step']):,}" in report  # type: ignore[arg-type, call-overload]
        findings = [i for i in run.events("incident") if i["kind"] != "recovered"]
        listed = re.findall(r"^- step [\d,]+ \(", report, re.MULTILINE)
        assert len(listed) == len(findings) or (
            not findings and "The monitor found nothing" in report
        )
        described = json.loads((run.out / "run.json").read_text())
        assert {"report.md", "curves.png"} <= {f["path"] for f in described["files"]}


def test_a_training_fault_names_no_gpu() -> None:
    refused = subprocess.run([sys.executable, "-m", "fakehw.train", "--inject",
                              "loss-divergence:3@100"], capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 2 and "happens to the whole run" in refused.stderr
