"""What a run will be: model, data, parallelism, batch, schedule. Seeded, so repeatable.

``make_plan`` turns the command line into a ``RunPlan``: it picks what was not
given (from ``--seed``), then sizes the job the way an engineer would: enough
tensor/pipeline parallelism and ZeRO sharding that a GPU holds its share, the
largest micro-batch that fits in ~88 % of memory, and a global batch that makes
a step take one to three seconds at the expected throughput.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from fakehw.specs import GpuSpec
from fakehw.train import arithmetic as ar
from fakehw.train.catalog import (
    DATASET_KIND,
    DATASETS,
    MODELS,
    Dataset,
    ModelEntry,
    find_dataset,
    find_model,
)

MIB = 1024**2
MEMORY_TARGET = 0.88  # of what the GPU leaves to processes
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class PlanError(ValueError):
    """The requested run cannot be made (it does not fit, a name is unknown...)."""


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: int
    targets: tuple[str, ...]
    dropout: float = 0.05


@dataclass
class RunPlan:
    seed: int
    task: str
    style: str
    model: ModelEntry
    dataset: Dataset
    gpu: GpuSpec
    nodes: int
    gpus_per_node: int
    par: ar.Parallelism
    seq: int
    global_batch: int  # sequences (pairs for DPO) per optimizer step
    total_steps: int
    steps_per_epoch: int
    epochs: int
    warmup_steps: int
    peak_lr: float
    schedule: str
    precision: str
    mfu: float
    trainable: int
    lora: LoraConfig | None
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    run_name: str
    save_dir: str
    memory: dict[str, int]  # bytes per GPU, by kind
    start_step: int = 0  # > 0 for a resumed run
    log_interval: int = 1  # steps between log lines (more at high --speed-factor)
    dpo_beta: float = 0.1
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def params(self) -> int:
        return self.model.arch.params

    @property
    def active_params(self) -> int:
        return self.model.arch.active_params

    @property
    def tokens_per_step(self) -> int:
        pairs = 2 if self.task == "dpo" else 1  # chosen and rejected
        return self.global_batch * self.seq * pairs

    @property
    def base_tokens_per_s(self) -> float:
        return ar.tokens_per_second(
            self.gpus, self.gpu.bf16_dense_tflops, self.mfu, self.active_params
        )

    @property
    def memory_mib(self) -> int:
        return int(ar.reserved_bytes(self.memory) / MIB)

    @property
    def load_memory_mib(self) -> int:
        """What a rank holds once weights (and, resuming, optimizer state) are loaded."""
        loaded = self.memory["weights"] + self.memory["workspace"] // 2
        if self.start_step:
            loaded += self.memory["optimizer"]
        return int(loaded / MIB)

    @property
    def checkpoint_bytes(self) -> int:
        return ar.checkpoint_bytes(self.params, self.trainable)


DEFAULT_STEP_LIMIT_S = 6.0  # a default run shows a step every few seconds


def _choose_model(task: str, gpus: int, gpu: GpuSpec, rng: random.Random) -> ModelEntry:
    """A model this cluster would really train: its states fit when fully
    sharded, it is not so small that the cluster would be wasted on it, and a
    step of half a million tokens takes seconds, not minutes (a demo must move)."""
    if task == "lora":
        return rng.choice([m for m in MODELS if m.arch.reasoning])
    per_gpu = gpu.memory_usable_mib * MIB

    def step_s(entry: ModelEntry) -> float:
        flops = ar.flops_per_token(entry.arch.active_params) * 512 * 1024
        return flops / (gpus * gpu.bf16_dense_tflops * 1e12 * 0.4)

    candidates = [
        entry
        for entry in MODELS
        if not entry.arch.reasoning
        and (2 * ar.BF16 + ar.ADAM_BYTES) * entry.arch.params / gpus < 0.5 * per_gpu
        and entry.arch.params >= min(gpus, 64) * 0.05e9
        and step_s(entry) <= DEFAULT_STEP_LIMIT_S
    ]
    if not candidates:
        candidates = sorted(MODELS, key=lambda m: m.arch.params)[:2]
    return rng.choice(candidates)


def _choose_dataset(task: str, rng: random.Random) -> Dataset:
    kind = DATASET_KIND[task]
    return rng.choice([d for d in DATASETS if d.kind == kind])


def _fits(memory: dict[str, int], gpu: GpuSpec, context_mib: int) -> bool:
    usable = (gpu.memory_usable_mib - context_mib) * MIB
    return ar.reserved_bytes(memory) <= MEMORY_TARGET * usable


def _parallelism(
    entry: ModelEntry,
    task: str,
    style: str,
    gpus: int,
    per_node: int,
    gpu: GpuSpec,
    seq: int,
    trainable: int,
) -> tuple[ar.Parallelism, dict[str, int]]:
    arch = entry.arch
    zero_default = {"megatron": 1, "deepspeed": 2, "hf": 3, "default": 3}[style]
    if task == "lora":
        zero_default = 0
    options = []
    for tp in (1, 2, 4, 8):
        if tp > per_node or gpus % tp:
            continue
        for pp in (1, 2, 4, 8):
            if gpus % (tp * pp) or (pp > 1 and style != "megatron"):
                continue
            if tp > 1 and style in ("hf", "default") and task != "pretrain":
                continue
            for zero in sorted({zero_default, 3} if style != "megatron" else {1}):
                options.append((tp, pp, zero))
    ep = min(arch.experts, per_node) if arch.is_moe else 1
    for tp, pp, zero in options:
        dp = gpus // (tp * pp)
        for recompute in (False, True):
            for micro in (16, 8, 4, 2, 1):
                if micro * seq > 131072 and micro > 1:
                    continue
                par = ar.Parallelism(tp, pp, dp, zero, micro, 1, recompute, ep)
                memory = ar.memory_breakdown(arch, par, seq, trainable)
                if _fits(memory, gpu, gpu.context_mib):
                    return par, memory
    raise PlanError(
        f"{entry.name} ({entry.size_label} parameters) does not fit on {gpus} x {gpu.name} "
        f"even with tensor/pipeline parallelism and full recomputation; use more GPUs "
        f"(--nodes) or a smaller --model"
    )


def _global_batch(par: ar.Parallelism, seq: int, tokens_per_s: float, task: str) -> int:
    """A power of two of sequences: steps of 1-3 s, never below one micro-batch per rank."""
    smallest = par.dp * par.micro_batch
    target_s = {"pretrain": 2.0, "sft": 2.5, "dpo": 3.0, "lora": 2.0}[task]
    pairs = 2 if task == "dpo" else 1
    wanted = tokens_per_s * target_s / (seq * pairs)
    batch: int = 2 ** max(0, round(math.log2(max(1.0, wanted))))
    batch = max(batch, smallest)
    batch = min(batch, 4096)
    return max(smallest, batch - batch % smallest)


def _nice_floor(value: float) -> int:
    """The largest 1, 2 or 5 x 10^k not above ``value`` (at least 1)."""
    nice = 1
    for exponent in range(0, 8):
        for mantissa in (1, 2, 5):
            if mantissa * 10**exponent <= value:
                nice = mantissa * 10**exponent
    return nice


def _nice(steps: float) -> int:
    for nice in (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000):
        if steps <= nice:
            return nice
    return 10000


def make_plan(
    *,
    seed: int,
    task: str,
    style: str,
    gpu: GpuSpec,
    nodes: int,
    gpus_per_node: int,
    model: str | None = None,
    dataset: str | None = None,
    precision: str = "bf16",
    resume: bool = False,
) -> RunPlan:
    rng = random.Random(seed)
    gpus = nodes * gpus_per_node
    entry = find_model(model) if model else _choose_model(task, gpus, gpu, rng)
    data = find_dataset(dataset) if dataset else _choose_dataset(task, rng)
    arch = entry.arch
    seq = {"pretrain": 4096, "sft": 4096, "dpo": 2048, "lora": 8192}[task]
    seq = min(seq, arch.max_seq)
    lora = None
    trainable = arch.params
    if task == "lora":
        rank = rng.choice((16, 32, 64))
        lora = LoraConfig(rank, 2 * rank, LORA_TARGETS)
        trainable = ar.lora_params(arch, rank, LORA_TARGETS)
    par, memory = _parallelism(entry, task, style, gpus, gpus_per_node, gpu, seq, trainable)
    mfu_base = {"pretrain": 0.44, "sft": 0.40, "dpo": 0.31, "lora": 0.27}[task]
    if arch.is_moe:
        mfu_base -= 0.10
    if par.tp * par.pp > 1:
        mfu_base -= 0.03
    if par.recompute:
        mfu_base -= 0.06
    if arch.params < 2e9:
        mfu_base -= 0.08
    mfu = round(max(0.2, mfu_base * rng.uniform(0.94, 1.06)), 4)
    tokens_per_s = ar.tokens_per_second(gpus, gpu.bf16_dense_tflops, mfu, arch.active_params)
    global_batch = _global_batch(par, seq, tokens_per_s, task)
    grad_accum = max(1, global_batch // (par.dp * par.micro_batch))
    par = ar.Parallelism(
        par.tp, par.pp, par.dp, par.zero_stage, par.micro_batch, grad_accum, par.recompute, par.ep
    )
    memory = ar.memory_breakdown(arch, par, seq, trainable)
    pairs = 2 if task == "dpo" else 1
    tokens_per_step = global_batch * seq * pairs
    if task == "pretrain":
        # Chinchilla-optimal or 300B tokens, whichever is more, within what
        # the data holds and three weeks on this cluster allow.
        budget = min(data.tokens, max(20 * arch.params, 300_000_000_000))
        budget = min(budget, int(tokens_per_s * 21 * 86400))
        epochs = 1
        steps_per_epoch = max(1000, budget // tokens_per_step)
        peak_lr = 3e-4 if arch.params < 20e9 else 1.5e-4
        if arch.params < 2e9:
            peak_lr = 6e-4
        schedule = "cosine"
        warmup = min(2000, _nice_floor(steps_per_epoch / 50))
    else:
        epochs = {"sft": 3, "dpo": 1, "lora": 2}[task]
        steps_per_epoch = max(50, data.samples // global_batch)
        peak_lr = {"sft": 2e-5, "dpo": 5e-7, "lora": 1e-4}[task]
        schedule = "cosine" if task != "dpo" else "linear"
        warmup = max(10, math.ceil(0.03 * steps_per_epoch * epochs))  # warmup_ratio 0.03
    total_steps = steps_per_epoch * epochs
    step_s = tokens_per_step / tokens_per_s
    eval_every = _nice(300.0 / step_s)
    # Saves land on evaluation steps, as configs usually have it.
    checkpoint_every = eval_every * max(2, round(_nice(900.0 / step_s) / eval_every))
    start_step = 0
    if resume:
        start_step = checkpoint_every * rng.randint(3, 40)
        start_step = min(start_step, total_steps // 2 - total_steps // 2 % checkpoint_every)
    family = entry.name.split("-")[0].lower()
    run_name = f"{family}-{entry.size_label.lower()}-{task}-{rng.randrange(16**4):04x}"
    root = rng.choice(("/checkpoints", "/lustre/fsx/runs", "/mnt/weka/ckpt", "/scratch/llm"))
    return RunPlan(
        seed=seed,
        task=task,
        style=style,
        model=entry,
        dataset=data,
        gpu=gpu,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        par=par,
        seq=seq,
        global_batch=global_batch,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        warmup_steps=warmup,
        peak_lr=peak_lr,
        schedule=schedule,
        precision=precision,
        mfu=mfu,
        trainable=trainable,
        lora=lora,
        eval_every=eval_every,
        # validation takes ~5 % of the time between two of them (a batch
        # costs ~0.12 of a training step)
        eval_batches=min(rng.choice((50, 100, 200)), max(20, round(0.4 * eval_every))),
        checkpoint_every=checkpoint_every,
        run_name=run_name,
        save_dir=f"{root}/{run_name}",
        memory=memory,
        start_step=start_step,
    )
