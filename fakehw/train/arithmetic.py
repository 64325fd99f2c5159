"""Training arithmetic: the standard formulas every fake-train number comes from.

* FLOPs: ~6·N per token (N = parameters active per token); tokens/s =
  GPUs x peak BF16 x MFU / (6·N); TFLOP/s per GPU = 6·N x tokens/s / GPUs.
* Memory per GPU (bytes), mixed-precision Adam: weights 2·N, gradients 2·N,
  optimizer 12·N (fp32 master, m, v), divided by tensor and pipeline
  parallelism and, by ZeRO stage, by data parallelism; activations
  s·b·h·(34 + 5·a·s/h) per layer (34·s·b·h with FlashAttention, 2·s·b·h
  with full recomputation), plus fp32 logits and a workspace.
* Loss: Chinchilla, L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022), capped
  at ln(vocabulary) early on.
* Checkpoints: parameters x bytes saved per parameter (2 for bf16 weights,
  12 more for the optimizer).

Pure functions: no state, no randomness (callers pass their own noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fakehw.specs import GpuSpec
from fakehw.train.catalog import Architecture

GIB = 1024**3
BF16 = 2
ADAM_BYTES = 12  # fp32 master copy + first and second moments
TRAINED_STATE_BYTES = 2 * BF16 + ADAM_BYTES  # a trained parameter: weight, gradient, AdamW
WORKSPACE_BYTES = int(1.6 * GIB)  # cuBLAS workspace, NCCL buffers, fragments
ALLOCATOR_SLACK = 1.1  # reserved over allocated in PyTorch's caching allocator

# Chinchilla fit (Hoffmann et al. 2022, approach 3).
CHINCHILLA_E, CHINCHILLA_A, CHINCHILLA_B = 1.69, 406.4, 410.7
CHINCHILLA_ALPHA, CHINCHILLA_BETA = 0.34, 0.28


@dataclass(frozen=True)
class Parallelism:
    tp: int
    pp: int
    dp: int
    zero_stage: int  # 0 none, 1 optimizer, 2 +gradients, 3 +weights (FSDP full shard)
    micro_batch: int
    grad_accum: int
    recompute: bool
    ep: int = 1  # expert parallelism (MoE)
    # ZeRO/FSDP shard group: dp (full shard), or the data-parallel ranks of one node
    # (hybrid shard: shard within a node, replicate across nodes). 0 means dp.
    shard_ranks: int = 0
    # bytes of a gradient element: bf16, or fp32 where the framework accumulates and
    # reduces gradients in fp32 (Megatron's main_grad buffers, its default)
    grad_bytes: int = 2

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def shard_group(self) -> int:
        return self.shard_ranks or self.dp

    @property
    def replicas(self) -> int:
        """Data-parallel copies of each shard (1 unless hybrid sharding)."""
        return self.dp // self.shard_group

    @property
    def micro_batches(self) -> int:
        """Micro-batches per optimizer step on each data-parallel rank (a pipeline's m)."""
        return self.grad_accum

    @property
    def sharded_checkpoint(self) -> bool:
        """Every rank writes its own shard (else rank 0 writes, the others wait)."""
        return self.zero_stage >= 1 or self.tp * self.pp > 1


def local_params(arch: Architecture, par: Parallelism, trainable: int) -> tuple[float, float]:
    """(parameters, trainable parameters) one GPU's model-parallel shard holds before
    ZeRO sharding: split by tensor and pipeline parallelism, and, for MoE experts, by
    expert parallelism. Weights and gradients of the trained parameters follow the
    same split (so under any ZeRO stage they are the same bytes)."""
    dense, experts = _local_parts(arch, par)
    local = dense + experts
    return local, local * (trainable / arch.params)


def _local_parts(arch: Architecture, par: Parallelism) -> tuple[float, float]:
    """(dense, expert) parameters of one GPU's model-parallel shard."""
    model_split = par.tp * par.pp
    experts = float(arch.expert_params) if arch.is_moe else 0.0
    dense = arch.params - experts
    return dense / model_split, experts / max(1, par.ep) / model_split


def sharded_params(
    arch: Architecture, par: Parallelism, trainable: int, from_stage: int
) -> tuple[float, float]:
    """(parameters, trainable parameters) one GPU keeps of what ZeRO stage
    ``from_stage`` and above shard (3: weights, 2: gradients, 1: optimizer states).
    Dense parameters are sharded over the shard group; an expert's only over the
    ranks that hold a copy of it (the expert-data-parallel group: the shard group
    over the expert-parallel size), as Megatron's distributed optimizer and
    DeepSpeed-MoE shard them."""
    dense, experts = _local_parts(arch, par)
    if par.zero_stage >= from_stage:
        dense /= par.shard_group
        experts /= max(1, par.shard_group // max(1, par.ep))
    held = dense + experts
    return held, held * (trainable / arch.params)


def memory_breakdown(
    arch: Architecture,
    par: Parallelism,
    seq: int,
    trainable: int,
    activation_dtype_bytes: int = BF16,
) -> dict[str, int]:
    """Bytes each GPU holds, by kind (what ``torch.cuda.memory_reserved`` would show):
    one formula for every parallelism (DP, TP, PP, EP; ZeRO 1/2/3, hybrid shard)."""
    weights = BF16 * sharded_params(arch, par, trainable, 3)[0]
    grads = par.grad_bytes * sharded_params(arch, par, trainable, 2)[1]
    optimizer = ADAM_BYTES * sharded_params(arch, par, trainable, 1)[1]
    s, b, h = seq, par.micro_batch, arch.hidden
    per_layer = (2 if par.recompute else 34) * s * b * h * activation_dtype_bytes / 2
    activations = per_layer * arch.layers / par.pp / par.tp
    # Pipeline stages keep several micro-batches in flight (1F1B: the first
    # stage holds pp of them once the pipeline is full).
    activations *= par.pp
    logits = 4 * s * b * arch.vocab / par.tp  # fp32 logits for the loss
    return {
        "weights": int(weights),
        "gradients": int(grads),
        "optimizer": int(optimizer),
        "activations": int(activations + logits),
        "workspace": WORKSPACE_BYTES,
    }


def reserved_bytes(breakdown: dict[str, int]) -> int:
    return int(sum(breakdown.values()) * ALLOCATOR_SLACK)


def flops_per_token(active_params: int) -> float:
    return 6.0 * active_params


def tflops_per_gpu(tokens_per_s: float, active_params: int, gpus: int) -> float:
    return flops_per_token(active_params) * tokens_per_s / gpus / 1e12


def chinchilla_loss(params: float, tokens: float) -> float:
    return float(
        CHINCHILLA_E
        + CHINCHILLA_A / params**CHINCHILLA_ALPHA
        + CHINCHILLA_B / max(tokens, 1.0) ** CHINCHILLA_BETA
    )


def effective_tokens(step: int, warmup: int, tokens_per_step: int) -> float:
    """Tokens seen, each step weighted by sqrt(lr / peak lr) while the learning
    rate warms up: a model learns little from its first steps at a tiny
    learning rate, yet its loss visibly starts to fall within tens of steps."""
    warmup = max(1, warmup)
    if step <= warmup:
        return tokens_per_step * (2.0 / 3.0) * math.pow(step, 1.5) / math.sqrt(warmup)
    return tokens_per_step * ((2.0 / 3.0) * warmup + (step - warmup))


def pretrain_loss(params: float, tokens: float, vocab: int) -> float:
    """Expected loss after ``tokens``: the Chinchilla curve, capped at the start."""
    return min(math.log(vocab) + 0.35, chinchilla_loss(params, tokens))


def finetune_loss(start: float, final: float, progress: float, epoch: float) -> float:
    """SFT-style loss: fast early drop, a step down at each new epoch (memorisation)."""
    decay = final + (start - final) * math.exp(-progress * 6.0)
    return decay - 0.06 * math.floor(epoch) * (start - final)


def learning_rate(
    step: int, total: int, warmup: int, peak: float, schedule: str, floor_ratio: float = 0.1
) -> float:
    """The rate after ``step`` optimizer steps, as the schedulers report it once they
    have stepped (Megatron's ``peak * num_steps / warmup``, HF's LambdaLR): linear
    warmup, then cosine (or linear) decay to ``floor_ratio`` of the peak."""
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = peak * floor_ratio
    if schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def checkpoint_bytes(params: int, trainable: int, with_optimizer: bool = True) -> int:
    """What a checkpoint holds: bf16 weights (of what is trained) and Adam state."""
    saved = BF16 * trainable if trainable < params else BF16 * params
    if with_optimizer:
        saved += ADAM_BYTES * trainable
    return int(saved)


def lora_params(arch: Architecture, rank: int, targets: tuple[str, ...]) -> int:
    """Trainable parameters of LoRA adapters on the named projections of every layer."""
    h, kv = arch.hidden, arch.kv_heads * arch.head_dim
    q = arch.heads * arch.head_dim
    shapes = {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, arch.ffn),
        "up_proj": (h, arch.ffn),
        "down_proj": (arch.ffn, h),
    }
    per_layer = sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    return per_layer * arch.layers


# ------------------------------------------------------------------ the step
# What one optimizer step costs, from the model, the parallelism and the fabric:
# compute at the kernels' efficiency, the pipeline bubble, the collectives (their
# sizes from the sharding, their times from the links' bus bandwidth, less what
# overlaps with compute), and the optimizer update. MFU, tokens/s, TFLOP/s and
# every time the log prints come out of this; none is set by hand.

# nccl-tests' bus bandwidth of a large ring collective, as a share of the hardware's:
NVLINK_EFFICIENCY = 0.80  # of the NVLinks' one-way rate (H100 NV18: 18 x 26.6 GB/s -> ~380)
NETWORK_EFFICIENCY = 0.90  # of the InfiniBand line rate per GPU (NDR 400 Gb/s -> 45 GB/s)
PCIE_BUSBW_GBPS = 21.0  # a PCIe Gen5 x16 ring through host bridges
ALL_TO_ALL_EFFICIENCY = 0.60  # an all-to-all reaches less of the links than a ring
COLLECTIVE_LATENCY_S = 25e-6  # per call, plus a few microseconds per rank
RANK_LATENCY_S = 2e-6
BUCKET_BYTES = 25 * 1024**2  # DDP's gradient buckets
HBM_EFFICIENCY = 0.7  # the optimizer update streams the states at this share of HBM bandwidth
# How much of a collective hides behind the compute it can overlap with (bucketed
# gradient reduction during backward, FSDP prefetching, async pipeline sends).
OVERLAP = {"gradients": 0.90, "parameters": 0.85, "pipeline": 0.5, "experts": 0.2,
           "tensor": 0.0}  # fmt: skip
BUS_FACTOR = {"AllReduce": 2.0, "ReduceScatter": 1.0, "AllGather": 1.0, "AllToAll": 1.0}


@dataclass(frozen=True)
class Fabric:
    """The links a collective can use: within a node, and from node to node."""

    intra: str  # "NVLink" or "PCIe"
    intra_gbps: float  # bus bandwidth of a ring within one node
    inter_gbps: float  # per GPU, of a ring across nodes
    gpus_per_node: int
    nodes: int

    @classmethod
    def of(cls, gpu: GpuSpec, gpus_per_node: int, nodes: int) -> Fabric:
        if gpu.nvlink_topology == "all":
            intra, gbps = "NVLink", NVLINK_EFFICIENCY * gpu.nvlink_count * gpu.nvlink_link_gbps
        else:  # bridged pairs: a ring over eight cards goes through PCIe
            intra, gbps = "PCIe", PCIE_BUSBW_GBPS
        network = NETWORK_EFFICIENCY * gpu.host.nic_gbits_per_gpu / 8
        return cls(intra, gbps, network, gpus_per_node, nodes)

    def link(self, ranks: int, stride: int) -> tuple[str, float]:
        """Transport and bus bandwidth of a group of ``ranks`` ranks, ``stride`` apart in
        the global order (a group that does not fit one node crosses the network)."""
        if ranks * stride <= self.gpus_per_node:
            return self.intra, self.intra_gbps
        return "InfiniBand", min(self.inter_gbps, self.intra_gbps)


@dataclass(frozen=True)
class Traffic:
    """One kind of collective of a step: its buffer, how often, over which ranks."""

    op: str  # AllReduce, ReduceScatter, AllGather, AllToAll, SendRecv
    purpose: str  # gradients, parameters, tensor, pipeline, experts
    nbytes: int  # the buffer of one call, as NCCL's NumelIn x element size
    calls: int  # per optimizer step, per GPU
    ranks: int
    transport: str
    busbw_gbps: float
    overlap: float  # the share that hides behind compute
    element_bytes: int = BF16

    @property
    def call_s(self) -> float:
        if self.op == "SendRecv":
            moved = float(self.nbytes)
        else:
            moved = self.nbytes * BUS_FACTOR[self.op] * (self.ranks - 1) / self.ranks
        bandwidth = self.busbw_gbps * (ALL_TO_ALL_EFFICIENCY if self.op == "AllToAll" else 1.0)
        latency = COLLECTIVE_LATENCY_S + RANK_LATENCY_S * self.ranks
        return moved / (bandwidth * 1e9) + latency

    @property
    def seconds(self) -> float:
        return self.calls * self.call_s

    @property
    def exposed_s(self) -> float:
        return self.seconds * (1.0 - self.overlap)

    @property
    def algbw_gbps(self) -> float:
        """nccl-tests' algorithm bandwidth: the buffer over the time of one call."""
        return self.nbytes / self.call_s / 1e9

    @property
    def achieved_busbw_gbps(self) -> float:
        factor = (
            1.0 if self.op == "SendRecv" else BUS_FACTOR[self.op] * (self.ranks - 1) / self.ranks
        )
        return self.algbw_gbps * factor

    @property
    def numel(self) -> int:
        return self.nbytes // self.element_bytes


@dataclass(frozen=True)
class StepPerformance:
    """One optimizer step of a run, broken down; the figures the log prints."""

    tokens: int  # per optimizer step
    gpus: int
    peak_flops: float  # per GPU, dense BF16
    model_flops: float  # model_flops_per_token x tokens (what MFU counts)
    compute_s: float  # kernels, at the full clock the plan assumes
    bubble_s: float  # pipeline stages waiting for each other
    optimizer_s: float  # the AdamW update
    traffic: tuple[Traffic, ...]
    kernel_efficiency: float  # achieved share of peak while kernels run
    eval_compute_s: float  # one validation batch (the same tokens, forward only)
    eval_exposed_s: float
    eval_bubble_s: float

    @property
    def exposed_comm_s(self) -> float:
        return sum(t.exposed_s for t in self.traffic)

    def step_s(self, compute_speed: float = 1.0) -> float:
        """The step's time when the kernels run at ``compute_speed`` of the plan's pace
        (the SM clocks: a power-capped or throttled GPU computes slower)."""
        speed = max(compute_speed, 1e-6)
        return (self.compute_s + self.bubble_s) / speed + self.exposed_comm_s + self.optimizer_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_s()

    @property
    def bubble_fraction(self) -> float:
        return self.bubble_s / max(self.compute_s + self.bubble_s, 1e-12)

    def mfu(self, step_s: float) -> float:
        return self.model_flops / (step_s * self.gpus * self.peak_flops)

    def tflops_per_gpu(self, step_s: float) -> float:
        return self.model_flops / step_s / self.gpus / 1e12

    def eval_batch_s(self, compute_speed: float = 1.0) -> float:
        speed = max(compute_speed, 1e-6)
        return (self.eval_compute_s + self.eval_bubble_s) / speed + self.eval_exposed_s

    @property
    def eval_tokens_per_s(self) -> float:
        return self.tokens / self.eval_batch_s()

    def largest(self, purpose: str | None = None) -> Traffic | None:
        """The collective that takes longest in a step (of one purpose, if given)."""
        chosen = [t for t in self.traffic if purpose is None or t.purpose == purpose]
        return max(chosen, key=lambda t: t.seconds, default=None)


def kernel_efficiency(arch: Architecture) -> float:
    """The share of peak BF16 a training step's kernels reach: wide GEMMs do best
    (~0.6 of peak at hidden 8192 on H100), a 2048-wide model less; MoE's grouped
    expert GEMMs and routing cost a quarter. Published MFUs: 38-55 % for dense
    models on H100/A100 (Llama 3: 38-43 % at 16k GPUs; MegaScale 55 % at 175B)."""
    width = 0.40 + 0.06 * math.log2(max(arch.hidden, 1024) / 2048)
    width = min(0.62, max(0.36, width))
    return width * (0.72 if arch.is_moe else 1.0)


def model_flops_per_token(arch: Architecture, task: str) -> float:
    """The work a token of the task needs, what MFU counts: 6·N (2·N forward, 4·N
    backward); LoRA's frozen weights get no gradients of their own (4·N); DPO also
    runs the reference model forward (8·N). N: parameters active per token."""
    n = float(arch.active_params)
    return {"lora": 4.0, "dpo": 8.0}.get(task, 6.0) * n


def hardware_flops_per_token(arch: Architecture, task: str, recompute: bool) -> float:
    """What the GPUs compute per token: the model's FLOPs, plus a second forward (2·N)
    when activations are recomputed (hardware, not model, FLOPs: MFU leaves it out)."""
    return model_flops_per_token(arch, task) + (2.0 * arch.active_params if recompute else 0.0)


def eval_flops_per_token(arch: Architecture, task: str) -> float:
    """A validation token: forward only (2·N; DPO: the policy and the reference, 4·N)."""
    return (4.0 if task == "dpo" else 2.0) * arch.active_params


def step_performance(
    arch: Architecture,
    par: Parallelism,
    task: str,
    seq: int,
    trainable: int,
    tokens_per_step: int,
    gpu: GpuSpec,
    fabric: Fabric,
    efficiency: float,
) -> StepPerformance:
    """The step's time, piece by piece, for this model on this parallelism and fabric."""
    gpus = par.world
    peak = gpu.bf16_dense_tflops * 1e12
    tokens_per_gpu_compute = tokens_per_step / gpus
    compute_s = hardware_flops_per_token(arch, task, par.recompute) * tokens_per_gpu_compute
    compute_s /= peak * efficiency
    m = par.micro_batches
    per_micro_s = compute_s / m
    bubble_s = per_micro_s * (par.pp - 1)  # 1F1B: (p-1)/(m+p-1) of the pipeline's time
    traffic = _step_traffic(arch, par, task, seq, trainable, fabric, per_micro_s)
    states = TRAINED_STATE_BYTES * sharded_params(arch, par, trainable, 1)[1]
    optimizer_s = 2 * states / (gpu.memory_bandwidth_gbs * 1e9 * HBM_EFFICIENCY)
    eval_compute_s = eval_flops_per_token(arch, task) * tokens_per_gpu_compute
    eval_compute_s /= peak * efficiency
    eval_traffic = _eval_traffic(traffic, par)
    return StepPerformance(
        tokens=tokens_per_step,
        gpus=gpus,
        peak_flops=peak,
        model_flops=model_flops_per_token(arch, task) * tokens_per_step,
        compute_s=compute_s,
        bubble_s=bubble_s,
        optimizer_s=optimizer_s,
        traffic=tuple(traffic),
        kernel_efficiency=efficiency,
        eval_compute_s=eval_compute_s,
        eval_exposed_s=sum(t.exposed_s for t in eval_traffic),
        eval_bubble_s=eval_compute_s / m * (par.pp - 1),
    )


def _step_traffic(
    arch: Architecture,
    par: Parallelism,
    task: str,
    seq: int,
    trainable: int,
    fabric: Fabric,
    per_micro_s: float,
) -> list[Traffic]:
    """Every collective of one step. Ranks are laid out tensor-parallel innermost, then
    data-parallel, then pipeline stages (Megatron's order), experts within a node."""
    local, local_trainable = local_params(arch, par, trainable)
    grads = int(par.grad_bytes * local_trainable)
    params = int(BF16 * local)
    m = par.micro_batches
    activations = seq * par.micro_batch * arch.hidden * BF16  # one micro-batch's hidden states
    found: list[Traffic] = []

    def add(op: str, purpose: str, nbytes: int, calls: int, ranks: int, stride: int,
            overlap: float | None = None) -> None:  # fmt: skip
        if ranks < 2 or calls < 1 or nbytes < 1:
            return
        transport, gbps = fabric.link(ranks, stride)
        share = OVERLAP[purpose] if overlap is None else overlap
        found.append(Traffic(op, purpose, nbytes, calls, ranks, transport, gbps, share))

    shard, replicas = par.shard_group, par.replicas
    # The backward of the last micro-batch is what gradient reduction can hide behind.
    backward_s = per_micro_s * 2 / 3
    if par.zero_stage == 0:
        buckets = max(1, math.ceil(grads / BUCKET_BYTES))
        reduce = Traffic("AllReduce", "gradients", grads, 1, par.dp,
                         *fabric.link(par.dp, par.tp), 0.0)  # fmt: skip
        add("AllReduce", "gradients", -(-grads // buckets), buckets, par.dp, par.tp,
            _hidden_share(reduce.seconds, backward_s, OVERLAP["gradients"]))  # fmt: skip
    elif par.zero_stage in (1, 2):
        scatter = Traffic("ReduceScatter", "gradients", grads, 1, shard,
                          *fabric.link(shard, par.tp), 0.0)  # fmt: skip
        add("ReduceScatter", "gradients", grads, 1, shard, par.tp,
            _hidden_share(scatter.seconds, backward_s, OVERLAP["gradients"]))  # fmt: skip
        # the updated parameters, gathered while the next step's first forward runs
        gather = Traffic("AllGather", "parameters", params, 1, shard,
                         *fabric.link(shard, par.tp), 0.0)  # fmt: skip
        add("AllGather", "parameters", params, 1, shard, par.tp,
            _hidden_share(gather.seconds, per_micro_s / 3, OVERLAP["parameters"]))  # fmt: skip
    else:  # FSDP: gather the parameters for forward and backward, scatter the gradients
        gathers = Traffic("AllGather", "parameters", params, 2 * m, shard,
                          *fabric.link(shard, par.tp), 0.0)  # fmt: skip
        scatters = Traffic("ReduceScatter", "gradients", grads, m, shard,
                           *fabric.link(shard, par.tp), 0.0)  # fmt: skip
        window = per_micro_s * m
        total = gathers.seconds + scatters.seconds
        share = _hidden_share(total, window, OVERLAP["parameters"])
        add("AllGather", "parameters", params, 2 * m, shard, par.tp, share)
        add("ReduceScatter", "gradients", grads, m, shard, par.tp, share)
    if replicas > 1:  # hybrid shard: the shards' gradients summed across nodes, once a step
        replicated = Traffic("AllReduce", "gradients", grads // shard, 1, replicas,
                             *fabric.link(replicas, par.tp * shard), 0.0)  # fmt: skip
        add("AllReduce", "gradients", grads // shard, 1, replicas, par.tp * shard,
            _hidden_share(replicated.seconds, backward_s, OVERLAP["gradients"]))  # fmt: skip
    layers = arch.layers // par.pp
    if par.tp > 1:  # two all-reduces forward and two backward in every layer
        add("AllReduce", "tensor", activations, 4 * layers * m, par.tp, 1)
    if par.pp > 1:  # activations forward, their gradients backward, at each stage boundary
        add("SendRecv", "pipeline", activations // par.tp, 2 * m, 2, par.tp * par.dp)
    if arch.is_moe and par.ep > 1:  # dispatch and combine, forward and backward
        routed = activations * arch.top_k // par.tp
        add("AllToAll", "experts", routed, 4 * layers * m, par.ep, 1)
    return found


def _hidden_share(seconds: float, window_s: float, best: float) -> float:
    """The share of ``seconds`` of communication that hides behind ``window_s`` of
    compute: at most ``best`` of it (the last bucket, the first gather never hide)."""
    if seconds <= 0:
        return best
    return min(best, best * window_s / seconds)


def _eval_traffic(traffic: list[Traffic], par: Parallelism) -> list[Traffic]:
    """A validation batch's collectives: forward only (no gradients): half the tensor-
    parallel and pipeline traffic, one parameter gather per micro-batch under FSDP."""
    kept = []
    for t in traffic:
        if t.purpose == "gradients":
            continue
        forward_half = t.purpose in ("tensor", "pipeline", "experts") or (
            t.purpose == "parameters" and par.zero_stage >= 3
        )
        if forward_half:
            kept.append(replace(t, calls=max(1, t.calls // 2)))
    return kept


# ---------------------------------------------------------------- I/O, start-up
# A parallel filesystem (Lustre, Weka) as one node sees it: reads are faster than writes.
FS_WRITE_GBPS_PER_NODE = 1.8
FS_READ_GBPS_PER_NODE = 4.0
TOKENIZE_SAMPLES_PER_S = 4000.0  # per tokenizer process (a fast tokenizer, packing)
TOKENIZE_PROCESSES = 32
SHARD_INDEX_S = 0.0008  # to open one pre-tokenized shard's index (memory-mapped)


def checkpoint_write_s(nbytes: int, writers: int) -> float:
    """A checkpoint's save: its bytes over the writing nodes' bandwidth (every node
    writes its ranks' shards when the state is sharded, else rank 0 writes it all)."""
    return max(2.0, nbytes / (FS_WRITE_GBPS_PER_NODE * 1e9 * max(1, writers)))


def checkpoint_read_s(nbytes: int, nodes: int) -> float:
    """Loading a checkpoint: each node reads its ranks' share."""
    return 1.5 + nbytes / (FS_READ_GBPS_PER_NODE * 1e9 * max(1, nodes))


def weights_read_s(params: int) -> float:
    """Loading pretrained bf16 weights: every node reads all of them, then shards."""
    return 1.5 + BF16 * params / (FS_READ_GBPS_PER_NODE * 1e9)


def model_init_s(params: int) -> float:
    """A model built from scratch: allocated on the GPUs and initialised in place."""
    return 1.0 + params / 2e10


# Conversions after training (story seconds): writing, llama.cpp's converter and
# quantizer (CPU-bound, parameters per second), GPTQ's layer-by-layer calibration
# (about a minute and a half per billion parameters on one H100).
GGUF_CONVERT_GBPS = 1.0
GGUF_QUANTIZE_PARAMS_PER_S = {"Q8_0": 4e8, "Q4_K_M": 1.2e8}
GPTQ_S_PER_PARAM = 90.0 / 1e9
BITSANDBYTES_S = 12.0


def export_s(kind: str, detail: str, nbytes: int, params: int) -> float:
    """How long an export takes: ``kind`` safetensors, gguf, int8, int4 or gptq."""
    if kind == "safetensors":
        return 1.0 + nbytes / (FS_WRITE_GBPS_PER_NODE * 1e9)
    if kind == "gguf":
        if detail == "F16":
            return 2.0 + 2 * nbytes / (GGUF_CONVERT_GBPS * 1e9)
        return 2.0 + params / GGUF_QUANTIZE_PARAMS_PER_S.get(detail, 2e8)
    if kind == "gptq":
        return 20.0 + params * GPTQ_S_PER_PARAM
    return BITSANDBYTES_S + BF16 * params / (FS_READ_GBPS_PER_NODE * 1e9)


def dataset_open_s(task: str, shards: int, samples: int) -> float:
    """Opening the data: a pretraining corpus's shard indexes (pre-tokenized), or a
    fine-tuning set tokenized and packed by the tokenizer processes."""
    if task == "pretrain":
        return 1.0 + SHARD_INDEX_S * shards
    return 1.0 + samples / (TOKENIZE_SAMPLES_PER_S * TOKENIZE_PROCESSES)
