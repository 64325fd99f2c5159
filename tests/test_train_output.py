"""fake-train --output-dir: what a run leaves on disk, read back by real readers.

TensorBoard's own event reader and a real ``tensorboard --logdir`` server on loopback
read the event files; the per-rank logs are checked line by line against loguru's
format; checkpoint directories against the real HF Trainer capture
(``tests/real/hf-trainer/``): its file names, ``trainer_state.json``'s form and
``save_total_limit`` rotation; weight files must be sparse.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REAL, Records, TrainRuns

from fakehw.train.output import hfconfig
from fakehw.train.output.files import FileWriter

HF_REAL = REAL / "hf-trainer" / "output_dir"
LOGURU = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| (INFO|WARNING|ERROR) +\| "
    r"__main__:\w+:\d+ - .+$"
)
EVENT_FILE = re.compile(r"^events\.out\.tfevents\.\d{10}\.[\w.-]+\.\d+\.\d+$")


def accumulate(path: Path):  # type: ignore[no-untyped-def]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


class Run(Records):
    def __init__(self, root: Path, stdout: str, stderr: str) -> None:
        super().__init__(Records.read(root / "metrics.jsonl"))
        self.root = root
        self.stdout = stdout
        self.stderr = stderr
        self.info = json.loads((root / "run.json").read_text())

    def event_files(self) -> list[Path]:
        return sorted(self.root.rglob("events.out.tfevents.*"))


Runs = TrainRuns[Run]


def play(runs: Runs, args: tuple[str, ...], index: int) -> Run:
    root = runs.base / f"out{index}"
    result = runs.play("--gpus", "8", "--seed", "5", *args, "--output-dir", str(root))
    return Run(root, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    played = TrainRuns(Path(tempfile.mkdtemp(prefix="fhw-out-")), play)
    yield played
    played.stop()


STEPS = ("--speed-factor", "300", "--exit-after-steps", "1000")
HF_SFT = ("--style", "hf", "--task", "sft", "--speed-factor", "1000", "--exit-after-steps", "2000")


# ------------------------------------------------------------- TensorBoard
def test_hf_event_files_carry_the_real_trainers_tags_and_values(runs: Runs) -> None:
    run = runs("--style", "hf", *STEPS)
    files = run.event_files()
    assert [f.parent for f in files] == [files[0].parent] * 2  # training, then evaluate()
    assert re.fullmatch(r"[A-Z][a-z]{2}\d\d_\d\d-\d\d-\d\d_dgx-h100-01", files[0].parent.name)
    assert all(EVENT_FILE.match(f.name) for f in files) and files[1].name.endswith(".1")
    ours = [accumulate(f).Tags() for f in files]
    real = [accumulate(f).Tags() for f in sorted((HF_REAL / "runs").iterdir())]
    for mine, theirs in zip(ours, real, strict=True):
        assert set(mine["scalars"]) == set(theirs["scalars"])
        assert set(mine["tensors"]) == set(theirs["tensors"])
    # the values are the run's: the log's interval losses at the logged steps
    events = accumulate(files[0])
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    assert losses, "no training loss written"
    assert set(losses) == {r["step"] for r in run.steps}
    evals = {e.step: e.value for e in events.Scalars("eval/loss")}
    assert evals == pytest.approx({r["step"]: r["loss"] for r in run.events("eval")
                                   if not r["final"]}, rel=1e-6)  # fmt: skip
    final = accumulate(files[1]).Scalars("eval/loss")
    assert [e.value for e in final] == pytest.approx(
        [r["loss"] for r in run.events("eval") if r["final"]], rel=1e-6
    )
    args = json.loads(events.Tensors("args/text_summary")[0].tensor_proto.string_val[0])
    assert args["output_dir"] == str(run.root) and args["save_total_limit"] == 2


@pytest.mark.parametrize(
    ("style", "tags"),
    [
        ("default", {"train/loss", "train/mfu", "train/tokens_per_s", "gpu/power_w",
                     "gpu/temp_c", "eval/loss"}),
        ("megatron", {"lm loss", "lm loss vs samples", "learning-rate", "grad-norm",
                      "iteration-time", "throughput", "lm loss validation",
                      "lm loss validation ppl"}),
        ("deepspeed", {"Train/Samples/train_loss", "Train/Samples/lr", "lm loss validation"}),
    ],
)  # fmt: skip
def test_each_framework_writes_its_own_tags(runs: Runs, style: str, tags: set[str]) -> None:
    run = runs("--style", style, *STEPS)
    (file,) = run.event_files()
    scalars = accumulate(file).Tags()["scalars"]
    assert tags <= set(scalars), sorted(scalars)
    events = accumulate(file)
    batch = run.info["plan"]["global_batch"]
    if style == "deepspeed":  # the monitor: every step, against the samples consumed
        steps = [e.step for e in events.Scalars("Train/Samples/train_loss")]
        assert steps == [step * batch for step in range(1, 1001)]
    if style == "megatron":  # every iteration; the timers at each log interval
        assert [e.step for e in events.Scalars("lm loss")] == list(range(1, 1001))
        assert [e.step for e in events.Scalars("lm loss vs samples")][:2] == [batch, 2 * batch]
        throughput = {e.step: e.value for e in events.Scalars("throughput")}
        at_mean_time = {r["step"]: r["tflops_per_gpu"] * r["step_time_s"]
                        / r["interval_step_time_s"] for r in run.steps}  # fmt: skip
        assert throughput == pytest.approx(at_mean_time)
        logged = re.findall(r"iteration +(\d+)/.*throughput per GPU \(TFLOP/s/GPU\): ([\d.]+)",
                            run.stdout)  # fmt: skip
        assert {int(i): float(v) for i, v in logged} == pytest.approx(throughput, abs=0.051)
    if style == "default":  # the GPUs as the daemon reported them, beside the loss
        power = [e.value for e in events.Scalars("gpu/power_w")]
        assert power == pytest.approx([r["power_w"] for r in run.events("gpus")], rel=1e-6)
        assert max(power) > 300  # training draws power


def test_a_running_tensorboard_serves_the_runs_scalars(runs: Runs, tmp_path: Path) -> None:
    run = runs("--style", "default", *STEPS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run.root), "--host",
         "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/data/plugin/scalars"
        deadline = time.monotonic() + 90
        tags: dict[str, dict[str, object]] = {}
        while time.monotonic() < deadline and "train/loss" not in tags.get("tensorboard", {}):
            try:
                with urllib.request.urlopen(f"{base}/tags", timeout=5) as reply:
                    tags = json.load(reply)
            except OSError:
                time.sleep(0.5)
        assert "train/loss" in tags.get("tensorboard", {}), tags
        query = urllib.parse.urlencode({"run": "tensorboard", "tag": "train/loss"})
        with urllib.request.urlopen(f"{base}/scalars?{query}", timeout=10) as reply:
            points = json.load(reply)  # [[wall_time, step, value], ...]
        assert [p[1] for p in points] == [r["step"] for r in run.steps]
        assert [p[2] for p in points] == pytest.approx([r["loss"] for r in run.steps], rel=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---------------------------------------------------------------- rank logs
def test_every_rank_logs_its_own_file_in_loguru_format(runs: Runs) -> None:
    run = runs("--style", "default", *STEPS)
    logs = sorted((run.root / "logs").iterdir())
    assert [p.name for p in logs] == sorted(f"train_rank{n}.log" for n in range(8))
    per_rank_loss: dict[int, list[float]] = {}
    for rank in range(8):
        lines = (run.root / "logs" / f"train_rank{rank}.log").read_text().splitlines()
        own = [line for line in lines if "NCCL" not in line]
        assert own and all(LOGURU.match(line) for line in own), own[:3]
        pid = re.search(r"pid (\d+)", own[0])
        assert pid and f"rank {rank}/8" in own[0]
        nccl = [line for line in lines if " NCCL INFO " in line]
        assert nccl and all(line.startswith(f"dgx-h100-01:{pid[1]}:") for line in nccl)
        steps = [line for line in own if " - step " in line]
        assert len(steps) == len(run.steps)
        per_rank_loss[rank] = [float(re.search(r"loss ([\d.]+)", s)[1]) for s in steps]  # type: ignore[index]
    # each rank logs its own micro-batches' loss; they average to the job's
    for k, record in enumerate(run.steps):
        mean = sum(per_rank_loss[r][k] for r in range(8)) / 8
        assert mean == pytest.approx(record["loss"], abs=2e-4)
        assert len({per_rank_loss[r][k] for r in range(8)}) > 1


def test_the_ranks_of_another_node_log_their_own_nccl_set_up(runs: Runs) -> None:
    run = runs("--gpus", "16", "--nodes", "2", "--speed-factor", "1000", "--exit-after-steps", "30")
    for rank in (0, 9, 15):
        lines = (run.root / "logs" / f"train_rank{rank}.log").read_text().splitlines()
        host = "dgx-h100-01" if rank < 8 else "dgx-h100-02"
        nccl = [line for line in lines if " NCCL INFO " in line]
        assert nccl and all(line.startswith(f"{host}:") for line in nccl)
        assert any("comm 0x" in line and f" rank {rank} nRanks 16 nNodes 2 " in line
                   for line in nccl)  # fmt: skip
        rings = [line for line in nccl if re.search(r"Channel \d\d/\d+ : 0 ", line)]
        assert bool(rings) == (rank == 0)  # only rank 0 prints the rings
        # the send side of each channel: to its successor in that channel's ring
        assert any(f"Channel 00/0 : {rank}[{rank % 8}] -> " in line for line in nccl)


def test_a_slow_rank_is_named_in_its_own_log_only(tmp_path: Path) -> None:
    from fakehw.specs import lookup
    from fakehw.train.events import Incident
    from fakehw.train.output.layouts.base import Layout
    from fakehw.train.output.ranklogs import RankLogs
    from fakehw.train.plan import make_plan

    plan = make_plan(seed=1, task="pretrain", style="default", gpu=lookup("h100"), nodes=1,
                     gpus_per_node=8)  # fmt: skip
    logs = RankLogs(plan, Layout(plan, tmp_path, lambda step: f"step_{step:07d}"))
    logs.incident(Incident("slow_rank", 120, 1.8e9, {"rank": 5, "host": "h", "slowdown": 12.0,
                                                      "reason": "GPU SM clock"}))  # fmt: skip
    logs.close()
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["train_rank5.log"]
    (line,) = (tmp_path / "logs" / "train_rank5.log").read_text().splitlines()
    assert LOGURU.match(line) and "| WARNING  |" in line and "12% slower" in line


# -------------------------------------------------------------- checkpoints
def test_hf_checkpoints_rotate_as_save_total_limit_does_and_keep_the_best(runs: Runs) -> None:
    import struct

    run = runs(*HF_SFT)
    saved = [c["step"] for c in run.events("checkpoint")]
    assert len(saved) >= 4
    # Trainer: every evaluation may become the best (lowest float32 eval_loss); a save
    # whose own evaluation is the best yet becomes best_model_checkpoint
    best_metric, best_step, best_model = None, None, None
    for record in [r for r in run.records if r.get("event") in ("eval", "checkpoint")]:
        if record["event"] == "eval" and not record["final"]:
            loss = struct.unpack("f", struct.pack("f", record["loss"]))[0]
            if best_metric is None or loss < best_metric:
                best_metric, best_step = loss, record["step"]
        elif record["event"] == "checkpoint" and record["step"] == best_step:
            best_model = best_step
    state = json.loads((run.root / f"checkpoint-{saved[-1]}" / "trainer_state.json").read_text())
    assert (state["best_metric"], state["best_global_step"]) == (best_metric, best_step)
    expected_path = None if best_model is None else str(run.root / f"checkpoint-{best_model}")
    assert state["best_model_checkpoint"] == expected_path
    # save_total_limit=2: the newest and the best (moved to second place), else the last two
    kept = sorted(int(p.name.split("-")[1]) for p in run.root.glob("checkpoint-*"))
    if best_model is None or best_model == saved[-1]:
        assert kept == saved[-2:]
    else:
        assert kept == sorted({best_model, saved[-1]})
    # what Trainer logs as it deletes (rank 0's log: the console hides INFO)
    rank0 = (run.root / "logs" / "train_rank0.log").read_text()
    for step in set(saved) - set(kept):
        path = f"{run.root}/checkpoint-{step}"
        assert f"Deleting older checkpoint [{path}] due to args.save_total_limit" in rank0
    assert "Deleting" not in run.stdout + run.stderr


def test_hf_rotation_leaves_what_the_real_trainer_left() -> None:
    """The real capture: saves at 100, 200, 300 with save_total_limit=2, no best."""
    from fakehw.specs import lookup
    from fakehw.train.output.layouts.hf import HfLayout
    from fakehw.train.plan import make_plan

    plan = make_plan(seed=1, task="sft", style="hf", gpu=lookup("h100"), nodes=1,
                     gpus_per_node=8)  # fmt: skip
    layout = HfLayout(plan, Path("/out"), lambda step: f"checkpoint-{step}")
    assert layout.retention([100, 200]) == []
    assert layout.retention([100, 200, 300]) == [100]
    real = (REAL / "hf-trainer" / "output_dir_listing.txt").read_text()
    assert "out/checkpoint-100" not in real and "out/checkpoint-200\n" in real
    layout.best_step = 100  # the best survives, moved to the second-newest place
    assert layout.retention([100, 200, 300]) == [200]


def test_hf_checkpoint_holds_the_real_trainers_files_in_its_format(runs: Runs) -> None:
    run = runs(*HF_SFT)
    last = max(run.root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    real_files = {"training_args.bin", "rng_state.pth", "scheduler.pt", "optimizer.pt",
                  "trainer_state.json", "config.json", "generation_config.json"}  # fmt: skip
    names = {p.name for p in last.iterdir()}
    assert real_files - {"optimizer.pt"} <= names
    real_state = json.loads((HF_REAL / "checkpoint-300" / "trainer_state.json").read_text())
    state = json.loads((last / "trainer_state.json").read_text())
    assert set(state) == set(real_state)
    # the same form, key for key, as Trainer's save_to_json writes it
    raw = (last / "trainer_state.json").read_bytes()
    assert raw == hfconfig.dumps(state)
    assert (HF_REAL / "checkpoint-300" / "trainer_state.json").read_bytes() == hfconfig.dumps(
        real_state
    )
    kinds = {frozenset(e) for e in real_state["log_history"]}
    assert {frozenset(e) for e in state["log_history"]} <= kinds
    logged = [e for e in state["log_history"] if "loss" in e]
    assert [e["step"] for e in logged] == [
        r["step"] for r in run.steps if r["step"] <= state["global_step"]
    ]
    config = json.loads((last / "config.json").read_text())
    real_config = json.loads((HF_REAL / "checkpoint-300" / "config.json").read_text())
    assert {"architectures", "hidden_size", "num_hidden_layers", "vocab_size"} <= set(config)
    assert config["transformers_version"] == real_config["transformers_version"]
    assert (last / "generation_config.json").read_bytes() == (
        HF_REAL / "checkpoint-300" / "generation_config.json"
    ).read_bytes()


@pytest.mark.parametrize("style", ["default", "hf", "megatron", "deepspeed"])
def test_weights_have_the_logged_size_and_use_no_disk(runs: Runs, style: str) -> None:
    run = runs("--style", style, *STEPS)
    (saved,) = run.events("checkpoint")
    directory = Path(str(saved["path"]))
    sizes = {str(p.relative_to(directory)): p.stat() for p in directory.rglob("*") if p.is_file()}
    assert len(sizes) == saved["files"]
    assert sum(s.st_size for s in sizes.values()) == saved["bytes"]
    big = [s for s in sizes.values() if s.st_size >= 1 << 20]
    assert big and all(s.st_blocks * 512 < s.st_size / 100 for s in big)
    disk = run.info["disk"]
    assert disk["sparse_files"] and disk["on_disk_bytes"] < 5 << 20 < disk["apparent_bytes"]


def test_the_pointers_name_the_newest_checkpoint(runs: Runs) -> None:
    megatron = runs("--style", "megatron", *STEPS)
    last = megatron.events("checkpoint")[-1]["step"]
    assert (megatron.root / "checkpoints" / "latest_checkpointed_iteration.txt").read_text() == str(
        last
    )
    deepspeed = runs("--style", "deepspeed", *STEPS)
    assert (deepspeed.root / "checkpoints" / "latest").read_text() == f"global_step{last}"
    default = runs("--style", "default", *STEPS)
    assert os.readlink(default.root / "checkpoints" / "latest") == f"step_{last:07d}"
    assert (default.root / "checkpoints" / "best").resolve().is_dir()


def test_a_file_system_that_allocates_sparse_files_gets_no_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakehw.train.output import files

    said: list[str] = []
    monkeypatch.setattr(files, "disk_bytes", lambda path: path.stat().st_size)
    writer = FileWriter(tmp_path, said.append)
    written = writer.write_files(tmp_path / "ckpt", [("model.safetensors", 10 << 20),
                                                     ("optimizer.pt", 20 << 20),
                                                     ("trainer_state.json", 4)],
                                 {"trainer_state.json": b"{}\n"})  # fmt: skip
    assert written == [("model.safetensors", 10 << 20), ("optimizer.pt", 20 << 20),
                       ("trainer_state.json", 3)]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["trainer_state.json"]
    assert len(said) == 1 and "not written" in said[0]


# ------------------------------------------------------------- the run's files
def test_the_log_names_only_paths_that_exist(runs: Runs) -> None:
    run = runs("--style", "default", *STEPS)
    named = set(re.findall(rf"{re.escape(str(run.root))}[\w/.-]*", run.stdout))
    assert named and all(Path(p).exists() for p in named), named
    assert run.info["status"] == "limit" and run.info["final"]["steps"] == 1000
    summary = re.search(r"final train loss ([\d.]+)", run.stdout)
    assert summary and run.info["final"]["train_loss"] == pytest.approx(float(summary[1]), abs=1e-4)
    listed = {f["path"] for f in run.info["files"]}
    assert {"metrics.jsonl", "logs/train_rank7.log"} <= listed


def test_the_config_file_sets_the_output_dir(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "from-config"
    config = tmp_path / "config.toml"
    config.write_text(f'[train]\noutput_dir = "{out}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.train", "--gpus", "8", "--seed", "2", "--speed-factor",
         "1000", "--exit-after-steps", "3"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**runs.env(), "FAKEHW_CONFIG": str(config)}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "run.json").exists() and f"{out}/checkpoints" in result.stdout


def test_an_output_dir_that_cannot_be_used_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.train", "--gpus", "8", "--output-dir", str(blocker)],
        capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not a directory" in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == ""


# -------------------------------------------------------------------- plot
def test_fakehw_plot_draws_the_runs_own_figures(runs: Runs, tmp_path: Path) -> None:
    from fakehw.tools.plot import PANELS, figure, read_run, smoothed

    run = runs("--style", "default", *STEPS)
    output = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, "-m", "fakehw", "plot", str(run.root), "-o",
                             str(output)], capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 50_000
    fig = figure(read_run(run.root))  # what was saved, inspected before saving
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [title for title, _, _ in PANELS]
    panel = dict(zip(titles, fig.axes, strict=True))
    raw, smooth, evals = panel["loss"].lines
    assert list(raw.get_xdata()) == [r["step"] for r in run.steps]
    assert list(raw.get_ydata()) == [r["loss"] for r in run.steps]
    assert list(smooth.get_ydata()) == pytest.approx(smoothed([r["loss"] for r in run.steps]))
    assert list(evals.get_ydata()) == [r["loss"] for r in run.events("eval") if not r["final"]]
    assert list(panel["MFU"].lines[0].get_ydata()) == [r["mfu"] for r in run.steps]
    mean, hottest = panel["GPU temperature"].lines
    assert list(mean.get_ydata()) == [r["temp_c"] for r in run.events("gpus")]
    assert list(hottest.get_ydata()) == [r["temp_c_max"] for r in run.events("gpus")]
    assert list(panel["GPU power"].lines[0].get_ydata()) == [
        r["power_w"] for r in run.events("gpus")
    ]


def test_fakehw_plot_reads_a_tensorboard_directory(runs: Runs) -> None:
    from fakehw.tools.plot import read_run

    run = runs("--style", "hf", *STEPS)
    curves = read_run(run.root / "runs")
    (file, _) = run.event_files()
    written = accumulate(file).Scalars("train/loss")
    assert curves.series["loss"] == ([e.step for e in written], [e.value for e in written])
    assert "power_w" not in curves.series  # HF's callback logs no GPU readings


def test_fakehw_plot_without_matplotlib_says_how_to_get_it(runs: Runs, tmp_path: Path) -> None:
    run = runs("--style", "default", *STEPS)
    png = tmp_path / "curves.png"
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fakehw.tools.cli import main\n"
            f"sys.exit(main(['plot', {str(run.root)!r}, '--output', {str(png)!r}]))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "fakehw: plotting needs matplotlib, an optional extra: pip install 'fakehw[plot]'\n"
    )
    assert not png.exists()


# ------------------------------------------------------------ weight files
def test_every_models_tensors_add_up_to_its_parameter_count() -> None:
    from fakehw.train.catalog import MODELS
    from fakehw.train.tensors import elements, model_tensors

    for entry in MODELS:
        tensors = model_tensors(entry.arch)
        assert elements(tensors) == entry.arch.params, entry.name
        assert len({name for name, _ in tensors}) == len(tensors), entry.name


def test_llama_shards_are_the_published_checkpoints_files() -> None:
    """meta-llama/Llama-3.1-8B on the Hub: four shards of these exact sizes and an index
    whose total_size is 16,060,522,496 (the bf16 data, headers left out)."""
    from fakehw.train.catalog import find_model
    from fakehw.train.tensors import INDEX_NAME, weight_files

    weights = weight_files(find_model("Llama-3.1-8B").arch)
    assert [(s.name, s.file_bytes) for s in weights.shards] == [
        ("model-00001-of-00004.safetensors", 4976698672),
        ("model-00002-of-00004.safetensors", 4999802720),
        ("model-00003-of-00004.safetensors", 4915916176),
        ("model-00004-of-00004.safetensors", 1168138808),
    ]
    index = json.loads(weights.contents[INDEX_NAME])
    assert index["metadata"]["total_size"] == 16060522496
    assert index["weight_map"]["lm_head.weight"] == "model-00004-of-00004.safetensors"


def test_saved_weights_open_in_the_safetensors_library(runs: Runs) -> None:
    from safetensors import safe_open

    run = runs("--style", "hf", *STEPS)
    (checkpoint,) = run.root.glob("checkpoint-*")
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    seen = {}
    for shard in sorted(checkpoint.glob("model-*.safetensors")):
        with safe_open(str(shard), framework="numpy") as opened:
            for name in opened.keys():  # noqa: SIM118 (safe_open has no __iter__)
                seen[name] = shard.name
                assert opened.get_slice(name).get_dtype() == "BF16"
    assert seen == index["weight_map"]
    shapes = {}
    with safe_open(str(checkpoint / index["weight_map"]["model.embed_tokens.weight"]),
                   framework="numpy") as opened:  # fmt: skip
        shapes = opened.get_slice("model.embed_tokens.weight").get_shape()
    config = json.loads((checkpoint / "config.json").read_text())
    assert shapes == [config["vocab_size"], config["hidden_size"]]


def test_a_resumed_run_finds_the_checkpoint_it_loads(runs: Runs) -> None:
    run = runs("--style", "megatron", "--resume", "--speed-factor", "1000",
               "--exit-after-steps", "300")  # fmt: skip
    loaded = re.search(r"loaded (\S+/iter_(\d+)) \(step", run.stdout)
    assert loaded and Path(loaded[1]).is_dir()
    start = int(loaded[2])
    assert run.info["plan"]["start_step"] == start
    saved = [c["step"] for c in run.events("checkpoint")]
    assert saved and all(step > start for step in saved)
    pointer = run.root / "checkpoints" / "latest_checkpointed_iteration.txt"
    assert pointer.read_text() == str(saved[-1])


def test_a_failed_job_says_so_in_run_json_and_its_ranks_logs(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    from fakehw.service.client import Client

    with Client.connect() as client:  # another job fills GPU 3
        client.request("attach", pid=sleeper.pid, name="other-job", gpus=[3])
        client.request("set_phase", pid=sleeper.pid, phase="train", memory_mib=80000)
        out = tmp_path / "out"
        result = subprocess.run(
            [sys.executable, "-m", "fakehw.train", "--gpus", "8", "--seed", "1",
             "--speed-factor", "1000", "--output-dir", str(out)],
            capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 1
    assert "CUDA out of memory" in result.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and any("OutOfMemoryError" in line for line in info["error"])
    rank3 = (out / "logs" / "train_rank3.log").read_text()
    assert "[rank3]: torch.OutOfMemoryError: CUDA out of memory." in rank3
    assert "OutOfMemoryError" not in (out / "logs" / "train_rank0.log").read_text()


def test_a_used_output_dir_is_resumed_from_its_newest_checkpoint_or_left_alone(
    runs: Runs, tmp_path: Path
) -> None:
    out = tmp_path / "used"  # a run of its own: the others' directories stay as they are
    command = ["--gpus", "8", "--seed", "5", *HF_SFT[:-1]]
    runs.play(*command, "1200", "--output-dir", str(out))
    first = Records(Records.read(out / "metrics.jsonl"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    program = [sys.executable, "-m", "fakehw.train", *command, "300", "--output-dir", str(out)]
    refused = subprocess.run(program, capture_output=True, text=True, timeout=120,
                             check=False, env=runs.env())  # fmt: skip
    assert refused.returncode == 2 and "holds a run already" in refused.stderr
    other = subprocess.run([*program, "--style", "megatron", "--resume"], capture_output=True,
                           text=True, timeout=120, check=False, env=runs.env())  # fmt: skip
    assert other.returncode == 2 and "in the hf style; this one is" in other.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    resumed = runs.play(*command, "300", "--output-dir", str(out), "--resume")
    newest = max(c["step"] for c in first.events("checkpoint"))
    assert f"loaded {out}/checkpoint-{newest} (step {newest:,}" in resumed.stderr
    records = Records(Records.read(out / "metrics.jsonl"))
    assert records.steps[: len(first.steps)] == first.steps  # the earlier run's lines kept
    assert records.steps[len(first.steps)]["step"] > newest
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    state = json.loads((out / f"checkpoint-{last}" / "trainer_state.json").read_text())
    logged = [e["step"] for e in state["log_history"] if "loss" in e]
    assert logged == [r["step"] for r in records.steps if r["step"] <= last]


def test_gguf_exports_open_in_the_gguf_reader_with_the_logged_size(runs: Runs) -> None:
    from gguf import GGUFReader

    from fakehw.train.catalog import find_model

    run = runs("--style", "default", *STEPS)
    model = find_model(run.info["config"]["model"])
    exports = [e for e in run.info["exports"] if e["format"] == "gguf"]
    assert [e["detail"] for e in exports] == ["F16", "Q8_0", "Q4_K_M"]
    for export in exports:
        (path,) = Path(export["path"]).glob(f"*-{export['detail']}.gguf")
        assert path.stat().st_size == export["bytes"] and path.stat().st_blocks * 512 < 1 << 20
        reader = GGUFReader(str(path))
        tensors = reader.tensors
        elements = sum(int(t.n_elements) for t in tensors)
        assert elements == model.arch.params
        last = tensors[-1]
        assert last.data_offset + last.n_bytes == path.stat().st_size
        file_type = int(reader.fields["general.file_type"].parts[-1][0])
        assert file_type == {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}[export["detail"]]
        kinds = {t.name: t.tensor_type.name for t in tensors}
        assert kinds["output_norm.weight"] == "F32"
        if export["detail"] == "Q4_K_M":  # llama.cpp's mix: Q6_K for the output, some attn_v
            assert {"Q4_K", "Q6_K"} <= set(kinds.values())


def test_gguf_sizes_are_the_published_quantizations_but_the_tokenizer() -> None:
    """bartowski/Llama-3.2-1B-Instruct-GGUF on the Hub: Q4_K_M 807,694,464 bytes, Q8_0
    1,321,082,912; fake-train writes no tokenizer (7.8 MB of metadata in those files)."""
    from fakehw.train.catalog import find_model
    from fakehw.train.gguf import gguf_file

    arch = find_model("Llama-3.2-1B").arch
    tokenizer = 7_822_500
    for quant, published in (("Q4_K_M", 807_694_464), ("Q8_0", 1_321_082_912)):
        assert gguf_file(arch, "Llama-3.2-1B", quant).size + tokenizer == pytest.approx(
            published, rel=1e-4
        )
