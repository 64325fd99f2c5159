"""What a run will be: model, data, parallelism, batch, schedule. Seeded, so repeatable.

``make_plan`` turns the command line into a ``RunPlan``: it picks what was not
given (from ``--seed``), then sizes the job the way an engineer would: of the
layouts the framework offers (tensor/pipeline/expert parallelism, ZeRO or FSDP,
sharded within a node or across all), each with the largest micro-batch that
fits in ~88 % of memory, the one whose modelled step is fastest
(``arithmetic.step_performance``: compute, pipeline bubble, exposed
communication); a global batch that makes a step take seconds and keeps a
pipeline's bubble small; and epochs and steps from what the dataset holds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from fakehw.specs import GpuSpec
from fakehw.train import arithmetic as ar
from fakehw.train.catalog import (
    DATASET_KIND,
    DATASETS,
    MODELS,
    TRAINS_ON,
    Architecture,
    Dataset,
    ModelEntry,
    find_dataset,
    find_model,
)
from fakehw.train.mixture import Mixture, MixtureError, parse

MIB = 1024**2
MEMORY_TARGET = 0.88  # of what the GPU leaves to processes
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_RANKS = (64, 32, 16, 8)  # the ranks LoRA recipes use, largest first
LORA_STATE_BUDGET = 0.05  # of the memory left by the base weights, for the adapters' states


class PlanError(ValueError):
    """The requested run cannot be made (it does not fit, a name is unknown...)."""


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: int
    targets: tuple[str, ...]
    dropout: float = 0.05
    tried: tuple[tuple[int, int], ...] = ()  # (rank, bytes of its adapters' states), largest first
    left_bytes: int = 0  # what a GPU leaves beside its CUDA context and the base weights


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
    efficiency: float  # the share of peak the step's kernels reach
    fabric: ar.Fabric
    performance: ar.StepPerformance  # one steady optimizer step, piece by piece
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
    tensorboard_dir: str = ""  # where --output-dir's TensorBoard files go ("" none)
    report_path: str = ""  # the report.md --output-dir gets at the end ("" none)
    grad_clip: float = 1.0  # clip_grad_norm_'s max_norm (max_grad_norm, --clip-grad)
    probe_every: int = 0  # steps between model probes (0: none; --probe-every)
    early_stopping_patience: int = 0  # evaluations without improvement (0: no early stopping)
    mixture: Mixture | None = None  # --mixture: the sources ``dataset`` blends
    # the layouts the planner weighed, fastest first: the first is ``par`` (until the
    # batch-size manager changes it)
    candidates: tuple[Layout, ...] = ()

    @property
    def datasets(self) -> list[Dataset]:
        """What the run reads: a mixture's sources, or its one dataset."""
        return [s.dataset for s in self.mixture.sources] if self.mixture else [self.dataset]

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
        """Tokens a step computes on (DPO: chosen and rejected, padded to ``seq``)."""
        return self.global_batch * self.seq * sequences_per_sample(self.task)

    @property
    def trained_tokens_per_step(self) -> int:
        """Tokens of the dataset a step consumes (packed data: every computed token;
        DPO pairs: their real length, without the padding)."""
        if self.task == "dpo":
            return round(self.global_batch * self.dataset.tokens / self.dataset.samples)
        return self.tokens_per_step

    @property
    def base_tokens_per_s(self) -> float:
        return self.performance.tokens_per_s

    @property
    def step_s(self) -> float:
        """A steady step at the clocks the plan assumes."""
        return self.performance.step_s()

    @property
    def mfu(self) -> float:
        return self.performance.mfu(self.step_s)

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


def _choose_model(task: str, style: str, gpus: int, gpu: GpuSpec, rng: random.Random) -> ModelEntry:
    """A model this cluster would really train: its states fit when fully
    sharded, it is not so small that the cluster would be wasted on it, and a
    step of half a million tokens takes seconds, not minutes (a demo must move).
    Not an MoE under the HF Trainer: without expert parallelism FSDP gathers every
    expert for every micro-batch, and a step would be mostly communication."""
    if task == "lora":
        return rng.choice([m for m in MODELS if m.arch.reasoning])
    per_gpu = gpu.memory_usable_mib * MIB

    def step_s(entry: ModelEntry) -> float:  # half a million tokens, at 85 % of the kernels'
        flops = ar.flops_per_token(entry.arch.active_params) * 512 * 1024
        efficiency = 0.85 * ar.kernel_efficiency(entry.arch)
        return flops / (gpus * gpu.bf16_dense_tflops * 1e12 * efficiency)

    candidates = [
        entry
        for entry in MODELS
        if not entry.arch.reasoning
        and not (style == "hf" and entry.arch.is_moe)
        and ar.TRAINED_STATE_BYTES * entry.arch.params / gpus < 0.5 * per_gpu
        and entry.arch.params >= min(gpus, 64) * 0.05e9
        and step_s(entry) <= DEFAULT_STEP_LIMIT_S
    ]
    if not candidates:
        candidates = sorted(MODELS, key=lambda m: m.arch.params)[:2]
    return rng.choice(candidates)


def _choose_dataset(task: str, rng: random.Random) -> Dataset:
    """A dataset of the task's kind (code, math, Chinese and domain data are there to be
    asked for, alone or in a --mixture)."""
    kind = DATASET_KIND[task]
    return rng.choice([d for d in DATASETS if d.kind == kind and d.default])


def _dataset(task: str, dataset: str | None, mixture: str | None, rng: random.Random) -> tuple[
    Dataset, Mixture | None
]:  # fmt: skip
    """The data: one dataset (given, or chosen), or a blend of several."""
    if dataset and mixture:
        raise PlanError("--dataset and --mixture both name the data; give one of them")
    if mixture:
        try:
            blend = parse(mixture, task)
        except MixtureError as exc:
            raise PlanError(str(exc)) from None
        return blend.as_dataset(DATASET_KIND[task]), blend
    if not dataset:
        return _choose_dataset(task, rng), None
    data = find_dataset(dataset)
    kinds = TRAINS_ON[task]
    if data.kind not in kinds:
        raise PlanError(
            f"{data.name} is {data.kind} data; {task} runs train on {' or '.join(kinds)} "
            "data (fake-train --list-datasets lists them)"
        )
    return data, None


def _fits(memory: dict[str, int], gpu: GpuSpec, context_mib: int) -> bool:
    usable = (gpu.memory_usable_mib - context_mib) * MIB
    return ar.reserved_bytes(memory) <= MEMORY_TARGET * usable


@dataclass(frozen=True)
class Layout:
    """One way to lay the job out, with its batch, what a rank holds and what a step
    costs: what the planner weighs (``RunPlan.candidates``)."""

    par: ar.Parallelism
    memory: dict[str, int]
    performance: ar.StepPerformance
    global_batch: int

    @property
    def reserved_mib(self) -> int:
        return int(ar.reserved_bytes(self.memory) / MIB)


def _layouts(
    entry: ModelEntry, task: str, style: str, gpus: int, per_node: int
) -> list[tuple[int, int, int, int]]:
    """(tp, pp, zero stage, shard group) the style's framework would offer for this job:
    Megatron: TP x PP with its distributed optimizer (ZeRO-1); DeepSpeed: ZeRO-2 or 3;
    FSDP (hf, default): full shard, or hybrid shard within a node, TP for pretraining;
    LoRA: plain DDP (the adapters are small)."""
    nodes = max(1, gpus // per_node)
    found = []
    for tp in (1, 2, 4, 8):
        if tp > per_node or gpus % tp:
            continue
        for pp in (1, 2, 4, 8):
            if gpus % (tp * pp) or (pp > 1 and style != "megatron"):
                continue
            if tp > 1 and style in ("hf", "default") and task != "pretrain":
                continue
            if tp > 1 and style == "deepspeed":
                continue
            dp = gpus // (tp * pp)
            if task == "lora":
                stages = [(0, 0)]
            elif style == "megatron":
                stages = [(1, 0)]
            elif style == "deepspeed":
                stages = [(2, 0), (3, 0)]
            else:
                stages = [(3, 0)]
                local = per_node // tp
                if nodes > 1 and 1 < local < dp and dp % local == 0:
                    stages.append((3, local))  # HYBRID_SHARD
            found += [(tp, pp, zero, shard) for zero, shard in stages]
    return found


def _parallelism(
    entry: ModelEntry,
    task: str,
    style: str,
    gpus: int,
    per_node: int,
    gpu: GpuSpec,
    seq: int,
    trainable: int,
    fabric: ar.Fabric,
    efficiency: float,
) -> list[Layout]:
    """The layouts that fit, each with its batch, fastest first (ties: the simplest)."""
    arch = entry.arch
    # Expert parallelism where the framework has it (Megatron, DeepSpeed-MoE, and
    # fake-train's own torchrun + FSDP2, as torchtitan pairs them), within a node; the HF
    # Trainer has none: FSDP shards the experts as any other parameter.
    has_ep = arch.is_moe and style != "hf"
    ep = min(arch.experts, per_node) if has_ep else 1
    ranked: list[tuple[float, int, int, Layout]] = []
    for tp, pp, zero, shard in _layouts(entry, task, style, gpus, per_node):
        dp = gpus // (tp * pp)
        grad_bytes = 4 if style == "megatron" else ar.BF16  # Megatron: fp32 main grads
        for par in _fitting_micro_batches(
            arch,
            ar.Parallelism(tp, pp, dp, zero, 1, 1, False, ep, shard, grad_bytes),
            gpu,
            seq,
            trainable,
        ):
            layout = _with_batch(par, arch, task, seq, trainable, gpu, fabric, efficiency)
            simpler = tp * pp * (2 if shard else 1) * (2 if par.recompute else 1)
            ranked.append((-layout.performance.tokens_per_s, simpler, len(ranked), layout))
    if not ranked:
        raise PlanError(
            f"{entry.name} ({entry.size_label} parameters) does not fit on {gpus} x {gpu.name} "
            f"even with tensor/pipeline parallelism and full recomputation; use more GPUs "
            f"(--nodes) or a smaller --model"
        )
    return [layout for *_, layout in sorted(ranked, key=lambda r: r[:3])]


def _fitting_micro_batches(
    arch: Architecture, layout: ar.Parallelism, gpu: GpuSpec, seq: int, trainable: int
) -> list[ar.Parallelism]:
    """The largest micro-batch that fits without recomputation, and the larger one that
    full recomputation makes room for: a step bound by communication (FSDP gathering
    every micro-batch's parameters) runs faster with more work per gather, which is
    why configs turn activation checkpointing on; the caller keeps the faster."""
    found: list[ar.Parallelism] = []
    for recompute in (False, True):
        for micro in (16, 8, 4, 2, 1):
            if micro * seq > 131072 and micro > 1:
                continue
            if found and micro <= found[0].micro_batch:
                break  # recomputing buys nothing at a micro-batch that fits without it
            par = replace(layout, micro_batch=micro, recompute=recompute)
            memory = ar.memory_breakdown(arch, par, seq, trainable)
            if _fits(memory, gpu, gpu.context_mib):
                found.append(par)
                break
    return found


def _with_batch(
    par: ar.Parallelism, arch: Architecture, task: str, seq: int, trainable: int,
    gpu: GpuSpec, fabric: ar.Fabric, efficiency: float,
) -> Layout:  # fmt: skip
    """The layout with a global batch: a power of two of sequences making a step take
    the task's usual seconds, at least 4 x PP micro-batches per rank under a pipeline
    (a 1F1B bubble of (p-1)/(m+p-1) under 16 %), never below one micro-batch per rank."""

    def performance(accum: int) -> ar.StepPerformance:
        return _costs(replace(par, grad_accum=accum), arch, task, seq, trainable, gpu, fabric,
                      efficiency)[1]  # fmt: skip

    least_accum = 4 * par.pp if par.pp > 1 else 1
    # Fine-tuning recipes keep global batches small: at most this many sequences
    # (pairs for DPO), whatever the cluster could take; the micro-batch shrinks to fit.
    most = {"pretrain": 4096, "sft": 512, "dpo": 256, "lora": 128}[task]
    while par.micro_batch > 1 and par.dp * par.micro_batch * least_accum > most:
        par = replace(par, micro_batch=par.micro_batch // 2)
    smallest = par.dp * par.micro_batch
    target_s = {"pretrain": 2.0, "sft": 2.5, "dpo": 3.0, "lora": 2.0}[task]
    first = performance(least_accum)
    wanted = first.tokens_per_s * target_s / (seq * sequences_per_sample(task))
    batch: int = 2 ** max(0, round(math.log2(max(1.0, wanted))))
    batch = min(max(batch, smallest * least_accum), max(most, smallest * least_accum))
    batch = max(smallest, batch - batch % smallest)
    accum = batch // smallest
    final = replace(par, grad_accum=accum)
    return Layout(final, *_costs(final, arch, task, seq, trainable, gpu, fabric, efficiency),
                  batch)  # fmt: skip


def _costs(
    par: ar.Parallelism, arch: Architecture, task: str, seq: int, trainable: int,
    gpu: GpuSpec, fabric: ar.Fabric, efficiency: float,
) -> tuple[dict[str, int], ar.StepPerformance]:  # fmt: skip
    """What a rank holds and what a step costs in a layout (its global batch is the
    data-parallel ranks' micro-batches times the accumulation)."""
    tokens = par.dp * par.micro_batch * par.grad_accum * seq * sequences_per_sample(task)
    return (
        ar.memory_breakdown(arch, par, seq, trainable),
        ar.step_performance(arch, par, task, seq, trainable, tokens, gpu, fabric, efficiency),
    )


def relayout(plan: RunPlan, par: ar.Parallelism) -> tuple[dict[str, int], ar.StepPerformance]:
    """What a rank holds and what a step costs under another layout of the same global
    batch (a batch-size manager's smaller micro-batch, or recomputation switched on)."""
    assert par.dp * par.micro_batch * par.grad_accum == plan.global_batch
    return _costs(par, plan.model.arch, plan.task, plan.seq, plan.trainable, plan.gpu,
                  plan.fabric, plan.efficiency)  # fmt: skip


def _size_lora(entry: ModelEntry, gpu: GpuSpec) -> LoraConfig:
    """The LoRA configuration from the GPU's memory: the largest rank of LORA_RANKS whose
    adapters, with their gradients and AdamW states (16 bytes per parameter), take at
    most LORA_STATE_BUDGET of what the frozen bf16 base weights leave on a GPU (the rest
    is the activations', which set the micro-batch); adapters on every linear module,
    alpha twice the rank (the usual scale). The smallest rank when none is that small."""
    left = (gpu.memory_usable_mib - gpu.context_mib) * MIB - ar.BF16 * entry.arch.params
    tried: list[tuple[int, int]] = []
    for rank in LORA_RANKS:
        states = ar.TRAINED_STATE_BYTES * ar.lora_params(entry.arch, rank, LORA_TARGETS)
        tried.append((rank, states))
        if states <= LORA_STATE_BUDGET * left or rank == LORA_RANKS[-1]:
            break
    return LoraConfig(tried[-1][0], 2 * tried[-1][0], LORA_TARGETS, tried=tuple(tried),
                      left_bytes=max(0, left))  # fmt: skip


def sequences_per_sample(task: str) -> int:
    return 2 if task == "dpo" else 1  # a preference pair: chosen and rejected


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
    early_stopping: int = 0,
    mixture: str | None = None,
) -> RunPlan:
    rng = random.Random(seed)
    gpus = nodes * gpus_per_node
    entry = find_model(model) if model else _choose_model(task, style, gpus, gpu, rng)
    data, blend = _dataset(task, dataset, mixture, rng)
    arch = entry.arch
    seq = {"pretrain": 4096, "sft": 4096, "dpo": 2048, "lora": 8192}[task]
    if task == "dpo":  # pairs are padded to the batch's longest, not packed
        per_sequence = data.tokens / data.samples / 2
        seq = min(seq, 256 * math.ceil(1.6 * per_sequence / 256))
    seq = min(seq, arch.max_seq)
    lora = None
    trainable = arch.params
    fabric = ar.Fabric.of(gpu, gpus_per_node, nodes)
    efficiency = round(ar.kernel_efficiency(arch) * rng.uniform(0.95, 1.05), 4)
    if task == "lora":
        lora = _size_lora(entry, gpu)
        trainable = ar.lora_params(arch, lora.rank, lora.targets)
    candidates = _parallelism(
        entry, task, style, gpus, gpus_per_node, gpu, seq, trainable, fabric, efficiency
    )
    layout = candidates[0]
    par, memory, performance = layout.par, layout.memory, layout.performance
    global_batch = layout.global_batch
    tokens_per_s = performance.tokens_per_s
    step_s = performance.step_s()
    tokens_per_step = performance.tokens
    if task == "pretrain":
        # Chinchilla-optimal or 300B tokens, whichever is more, within what
        # the data holds and three weeks on this cluster allow.
        budget = min(data.tokens, max(20 * arch.params, 300_000_000_000))
        budget = min(budget, int(tokens_per_s * 21 * 86400))
        epochs = 1
        total_steps = max(1000, budget // tokens_per_step)
        # an epoch is the dataset's tokens: the budget is usually a share of one
        steps_per_epoch = max(total_steps, data.tokens // tokens_per_step)
        peak_lr = 3e-4 if arch.params < 20e9 else 1.5e-4
        if arch.params < 2e9:
            peak_lr = 6e-4
        schedule = "cosine"
        warmup = min(2000, _nice_floor(total_steps / 50))
    else:
        epochs = {"sft": 3, "dpo": 1, "lora": 2}[task]
        if task == "dpo":  # pairs, one sample each: steps from the sample count
            steps_per_epoch = max(1, data.samples // global_batch)
        else:  # packed: an epoch is the dataset's tokens in sequences of ``seq``
            steps_per_epoch = max(1, data.tokens // tokens_per_step)
        peak_lr = {"sft": 2e-5, "dpo": 5e-7, "lora": 1e-4}[task]
        schedule = "cosine" if task != "dpo" else "linear"
        warmup = max(1, math.ceil(0.03 * steps_per_epoch * epochs))  # warmup_ratio 0.03
        total_steps = steps_per_epoch * epochs
    eval_every = min(_nice(300.0 / step_s), _nice_floor(min(steps_per_epoch, total_steps) / 4))
    # Saves land on evaluation steps, as configs usually have it.
    checkpoint_every = eval_every * max(2, round(_nice(900.0 / step_s) / eval_every))
    if early_stopping:  # load_best_model_at_end: a checkpoint at every evaluation
        checkpoint_every = eval_every
    # Validation takes ~5 % of the time between two of them, 10-200 batches.
    eval_batches = round(0.05 * eval_every * step_s / performance.eval_batch_s())
    eval_batches = min(200, max(10, eval_batches))
    start_step = 0
    if resume:
        start_step = checkpoint_every * rng.randint(3, 40)
        start_step = min(start_step, total_steps // 2 - total_steps // 2 % checkpoint_every)
    family = entry.name.split("-")[0].lower()
    run_name = f"{family}-{entry.name_size.lower()}-{task}-{rng.randrange(16**4):04x}"
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
        efficiency=efficiency,
        fabric=fabric,
        performance=performance,
        trainable=trainable,
        lora=lora,
        eval_every=eval_every,
        eval_batches=eval_batches,
        checkpoint_every=checkpoint_every,
        run_name=run_name,
        save_dir=f"{root}/{run_name}",
        memory=memory,
        start_step=start_step,
        early_stopping_patience=early_stopping,
        mixture=blend,
        candidates=tuple(candidates),
    )
