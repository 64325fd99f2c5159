"""fake-train's arithmetic and plans: model sizes, memory, schedules, log formats."""

from __future__ import annotations

import io
import itertools
import math
import re

import pytest

from fakehw.specs import lookup
from fakehw.train import arithmetic as ar
from fakehw.train.catalog import MODELS, TASKS, UnknownModel, find_model
from fakehw.train.events import CheckpointInfo, EvalResult, StepMetrics
from fakehw.train.plan import PlanError, make_plan
from fakehw.train.styles import STYLES
from fakehw.train.terminal import Terminal

H100 = lookup("h100")


@pytest.mark.parametrize(
    ("name", "billions", "active"),
    [
        ("Llama-3.1-8B", 8.03, 8.03),
        ("Llama-3.1-70B", 70.55, 70.55),
        ("Llama-3.2-1B", 1.24, 1.24),
        ("Mistral-7B-v0.3", 7.25, 7.25),
        ("Qwen3-4B", 4.02, 4.02),
        ("Mixtral-8x7B-v0.1", 46.70, 12.88),
    ],
)
def test_parameter_counts_match_the_published_ones(
    name: str, billions: float, active: float
) -> None:
    arch = find_model(name).arch
    assert arch.params / 1e9 == pytest.approx(billions, abs=0.006)
    assert arch.active_params / 1e9 == pytest.approx(active, abs=0.006)


@pytest.mark.parametrize(
    ("name", "exact"),
    [  # the counts their model cards / safetensors indexes give
        ("Llama-3.1-8B", 8_030_261_248),
        ("Mistral-7B-v0.3", 7_248_023_552),
        ("Qwen3-4B", 4_022_468_096),  # with its query/key norms
        ("Qwen2.5-14B", 14_770_033_664),  # with its query/key/value biases
        ("Mixtral-8x7B-v0.1", 46_702_792_704),
    ],
)
def test_parameter_counts_are_exact(name: str, exact: int) -> None:
    assert find_model(name).arch.params == exact


def test_parodies_share_their_originals_architecture() -> None:
    by_name = {m.name: m for m in MODELS}
    for model in MODELS:
        if not model.real and model.parody_of in by_name:
            assert model.arch == by_name[model.parody_of].arch


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownModel, match=r"Llama-3\.1-8B"):
        find_model("llama-3.1-8")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_plan_fits_the_gpu_and_is_consistent(task: str, style: str) -> None:
    plan = make_plan(seed=3, task=task, style=style, gpu=H100, nodes=8, gpus_per_node=8)
    par = plan.par
    assert par.tp * par.pp * par.dp == plan.gpus
    assert plan.global_batch == par.dp * par.micro_batch * par.grad_accum
    assert plan.memory_mib <= H100.memory_usable_mib
    pairs = 2 if task == "dpo" else 1
    assert plan.tokens_per_step == plan.global_batch * plan.seq * pairs
    assert plan.checkpoint_every % plan.eval_every == 0
    step_s = plan.tokens_per_step / plan.base_tokens_per_s
    assert 0.3 < step_s < 30, step_s
    assert 0.2 <= plan.mfu <= 0.55


def test_plans_are_reproducible_from_the_seed() -> None:
    one = make_plan(seed=42, task="pretrain", style="default", gpu=H100, nodes=8, gpus_per_node=8)
    two = make_plan(seed=42, task="pretrain", style="default", gpu=H100, nodes=8, gpus_per_node=8)
    assert one == two
    models = {
        make_plan(
            seed=s, task="pretrain", style="default", gpu=H100, nodes=8, gpus_per_node=8
        ).model.name
        for s in range(30)
    }
    assert len(models) >= 4  # seeds give variety


def test_lora_trains_a_small_share_of_a_reasoning_model() -> None:
    plan = make_plan(seed=1, task="lora", style="hf", gpu=H100, nodes=1, gpus_per_node=8)
    assert plan.lora is not None and plan.model.arch.reasoning
    share = plan.trainable / plan.params
    assert 0.001 < share < 0.05
    # r x (in + out) per adapted projection, every layer
    arch = plan.model.arch
    q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    per_layer = plan.lora.rank * (
        (arch.hidden + q) * 2 + (arch.hidden + kv) * 2 + (arch.hidden + arch.ffn) * 3
    )
    assert plan.trainable == per_layer * arch.layers


def test_a_model_too_big_for_the_cluster_is_refused_with_advice() -> None:
    with pytest.raises(PlanError, match="--nodes"):
        make_plan(
            seed=0, task="pretrain", style="hf", gpu=lookup("a100-40gb"), nodes=1,
            gpus_per_node=1, model="Llama-3.1-70B",
        )  # fmt: skip


def test_memory_follows_zero_sharding() -> None:
    arch = find_model("Llama-3.1-8B").arch
    base = ar.Parallelism(1, 1, 8, 0, 1, 1, False)
    ddp = ar.memory_breakdown(arch, base, 4096, arch.params)
    assert ddp["weights"] == 2 * arch.params
    assert ddp["optimizer"] == 12 * arch.params
    zero3 = ar.memory_breakdown(arch, ar.Parallelism(1, 1, 8, 3, 1, 1, False), 4096, arch.params)
    assert zero3["weights"] == 2 * arch.params // 8
    assert zero3["gradients"] == 2 * arch.params // 8
    assert zero3["optimizer"] == 12 * arch.params // 8


def test_learning_rate_warms_up_then_decays_by_cosine() -> None:
    peak = 3e-4
    lrs = [ar.learning_rate(s, 10_000, 1000, peak, "cosine") for s in range(10_001)]
    assert lrs[100] == pytest.approx(peak * 100 / 1000)  # Megatron: peak x step / warmup
    assert lrs[1000] == pytest.approx(peak)
    assert lrs[5500] == pytest.approx(peak * (0.1 + 0.9 * 0.5))  # halfway down the cosine
    assert lrs[10_000] == pytest.approx(0.1 * peak)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:1000]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[1000:]))


def test_pretraining_loss_follows_chinchilla() -> None:
    n = 7e9
    assert ar.pretrain_loss(n, 0, 32000) == pytest.approx(math.log(32000) + 0.35)
    at_20_tokens_per_param = ar.pretrain_loss(n, 20 * n, 32000)
    expected = 1.69 + 406.4 / n**0.34 + 410.7 / (20 * n) ** 0.28
    assert at_20_tokens_per_param == pytest.approx(expected)
    assert 2.0 < at_20_tokens_per_param < 2.3


def test_checkpoint_bytes_are_parameters_times_bytes_saved() -> None:
    assert ar.checkpoint_bytes(8_000_000_000, 8_000_000_000) == 14 * 8_000_000_000
    lora = ar.checkpoint_bytes(8_000_000_000, 20_000_000)
    assert lora == (2 + 12) * 20_000_000


# ----------------------------------------------------------- log formats
def _metrics(**changes: object) -> StepMetrics:
    values: dict[str, object] = dict(
        step=120, total_steps=5000, epoch=0, epochs=1, epoch_fraction=0.024,
        tokens_seen=120 * 1048576, samples_seen=120 * 256, loss=2.3456789, interval_loss=2.3456789,
        interval_step_s=2.097152, interval_skipped=0, interval_tflops_per_gpu=392.3,
        ppl=math.exp(2.3456789),
        lr=2.5e-4, grad_norm=0.81234, tokens_per_s=500_000.0, samples_per_s=122.07,
        step_time_s=2.097152, elapsed_s=260.0, eta_s=10_000.0, tflops_per_gpu=392.3,
        mfu=0.3965, gpus=64, global_batch=256, global_batch_tokens=1048576,
        params=8_030_261_248, loss_scale=None, skipped_steps=0, time=1_795_000_000.5,
        memory_gib=60.0,
    )  # fmt: skip
    values.update(changes)
    return StepMetrics(**values)  # type: ignore[arg-type]


def _style(name: str, seed: int = 2) -> tuple[object, io.StringIO]:
    plan = make_plan(seed=seed, task="pretrain", style=name, gpu=H100, nodes=8, gpus_per_node=8)
    out = io.StringIO()
    return STYLES[name](Terminal(out, color=False), plan), out


def test_megatron_iteration_line_is_training_logs_format() -> None:
    style, out = _style("megatron")
    style.step(_metrics())  # type: ignore[attr-defined]
    line = out.getvalue().rstrip("\n")
    pattern = (
        r" \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] iteration {6}120/ {4}5000 \|"
        r" consumed samples: {8}30720 \| elapsed time per iteration \(ms\): 2097\.2 \|"
        r" throughput per GPU \(TFLOP/s/GPU\): 392\.3 \| learning rate: 2\.500000E-04 \|"
        r" global batch size: {3}256 \| lm loss: 2\.345679E\+00 \| loss scale: 1\.0 \|"
        r" grad norm: 0\.812 \| number of skipped iterations: {3}0 \|"
        r" number of nan iterations: {3}0 \|"
    )
    assert re.fullmatch(pattern, line), line


def test_megatron_validation_block() -> None:
    style, out = _style("megatron")
    style.eval_done(EvalResult(200, 2.5, math.exp(2.5), 1000, 10.0, 1_795_000_000.0))  # type: ignore[attr-defined]
    text = out.getvalue().splitlines()
    assert text[1] == (
        " validation loss at iteration 200 | lm loss value: 2.500000E+00 | "
        "lm loss PPL: 1.218249E+01 | "
    )
    assert text[0] == text[2] == "-" * (len(text[1]) + 1)  # Megatron: len(string) + 1


def test_hf_trainer_logs_are_python_dicts() -> None:
    style, out = _style("hf")
    style.step(_metrics())  # type: ignore[attr-defined]
    # transformers 5, as tests/real/hf-trainer/stdout.txt: four significant digits, strings
    assert out.getvalue() == (
        "{'loss': '2.346', 'grad_norm': '0.8123', 'learning_rate': '0.00025', 'epoch': '0.024'}\n"
    )


def test_deepspeed_lines_carry_its_logger_prefix() -> None:
    style, out = _style("deepspeed")
    style.step(_metrics())  # type: ignore[attr-defined]
    lines = out.getvalue().splitlines()
    prefix = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] \[INFO\] "
    assert re.fullmatch(
        prefix + r"\[logging\.py:96:log_dist\] \[Rank 0\] step=120, skipped=0, "
        r"lr=\[0\.00025, 0\.00025\], mom=\[\(0\.9, 0\.95\), \(0\.9, 0\.95\)\]",
        lines[0],
    ), lines[0]
    assert re.fullmatch(
        prefix + r"\[timer\.py:264:stop\] epoch=0/micro_step=\d+/global_step=120, "
        r"RunningAvgSamplesPerSec=[\d.]+, CurrSamplesPerSec=122\.07, "
        r"MemAllocated=[\d.]+GB, MaxMemAllocated=[\d.]+GB",
        lines[1],
    ), lines[1]


def test_checkpoint_files_add_up_to_the_checkpoint_size() -> None:
    for name in STYLES:
        style, _ = _style(name)
        plan = style.plan  # type: ignore[attr-defined]
        files = style.checkpoint_files(1000, plan.checkpoint_bytes)  # type: ignore[attr-defined]
        data = sum(b for f, b in files if not f.endswith((".json", ".metadata", "common.pt",
                                                           ".bin", "scheduler.pt")))  # fmt: skip
        assert data == pytest.approx(plan.checkpoint_bytes, rel=1e-6), name


def test_default_style_checkpoint_line_states_size_and_speed() -> None:
    style, out = _style("default")
    info = CheckpointInfo(1000, "/ckpt/step_0001000", (("model.safetensors", 10**9),),
                          14 * 10**9, 7.0, 1_795_000_000.0)  # fmt: skip
    style.checkpoint_done(info)  # type: ignore[attr-defined]
    assert "saved 13.0 GiB in 7.0 s (2.0 GB/s)" in out.getvalue()
