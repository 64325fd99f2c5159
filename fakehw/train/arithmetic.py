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

import itertools
import math
from dataclasses import dataclass

from fakehw.train.catalog import Architecture

GIB = 1024**3
BF16 = 2
ADAM_BYTES = 12  # fp32 master copy + first and second moments
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

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def sharded_checkpoint(self) -> bool:
        """Every rank writes its own shard (else rank 0 writes, the others wait)."""
        return self.zero_stage >= 1 or self.tp * self.pp > 1


def memory_breakdown(
    arch: Architecture,
    par: Parallelism,
    seq: int,
    trainable: int,
    activation_dtype_bytes: int = BF16,
) -> dict[str, int]:
    """Bytes each GPU holds, by kind (what ``torch.cuda.memory_reserved`` would show)."""
    model_split = par.tp * par.pp
    weights = BF16 * arch.params / model_split
    if par.ep > 1 and arch.is_moe:
        dense = arch.active_params
        weights = BF16 * (dense + (arch.params - dense) / par.ep) / model_split
    grads = BF16 * trainable / model_split
    optimizer = ADAM_BYTES * trainable / model_split
    if par.zero_stage >= 1:
        optimizer /= par.dp
    if par.zero_stage >= 2:
        grads /= par.dp
    if par.zero_stage >= 3:
        weights /= par.dp
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


def tokens_per_second(gpus: int, peak_tflops: float, mfu: float, active_params: int) -> float:
    return gpus * peak_tflops * 1e12 * mfu / flops_per_token(active_params)


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
    """Linear warmup, then cosine (or linear) decay to ``floor_ratio`` of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
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


# lm-evaluation-harness scores of well-trained base models, by size (log10 params).
_BENCHMARKS = {
    # task: ((log10 N, score) points, metric, shots)
    "hellaswag": (
        ((9.0, 0.46), (9.6, 0.62), (9.9, 0.79), (10.2, 0.82), (10.85, 0.86)),
        "acc_norm",
        0,
    ),
    "arc_easy": (((9.0, 0.62), (9.6, 0.74), (9.9, 0.81), (10.2, 0.84), (10.85, 0.88)), "acc", 0),
    "mmlu": (((9.0, 0.31), (9.6, 0.55), (9.9, 0.65), (10.2, 0.74), (10.85, 0.79)), "acc", 5),
    "gsm8k": (
        ((9.0, 0.06), (9.6, 0.36), (9.9, 0.52), (10.2, 0.68), (10.85, 0.82)),
        "exact_match",
        5,
    ),
}
BENCHMARK_TASKS = tuple(_BENCHMARKS)


def benchmark_score(task: str, params: float, reasoning: bool = False) -> float:
    points, _, _ = _BENCHMARKS[task]
    x = math.log10(max(params, 1e8))
    if x <= points[0][0]:
        score = points[0][1]
    elif x >= points[-1][0]:
        score = points[-1][1]
    else:
        score = points[0][1]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= x <= x1:
                score = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                break
    if reasoning and task == "gsm8k":
        score = min(0.95, score + 0.25)
    return score


def benchmark_info(task: str) -> tuple[str, int]:
    _, metric, shots = _BENCHMARKS[task]
    return metric, shots


def allreduce_time_s(size_bytes: float, ranks: int, bus_gbps: float) -> float:
    """Ring all-reduce time for ``size_bytes`` at a bus bandwidth (GB/s, nccl-tests' busbw)."""
    if ranks < 2:
        return 0.0
    return size_bytes * 2 * (ranks - 1) / ranks / (bus_gbps * 1e9)
