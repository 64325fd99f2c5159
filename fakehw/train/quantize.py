"""``--quantize``: the exported model quantized, as the tools do it, with what it costs.

- ``int8``: bitsandbytes' LLM.int8 (vector-wise int8 with fp16 outliers): no
  calibration, about lossless.
- ``int4``: bitsandbytes' NF4 (QLoRA's 4-bit NormalFloat, block 64): no calibration.
- ``gptq``: GPTQ 4-bit, group size 128: ``CALIBRATION_SAMPLES`` sequences of
  ``CALIBRATION_SEQ`` tokens of the run's own data go through the model, and each
  decoder layer is quantized in turn (its seven linear modules, each solving its
  weights' rounding against the calibration activations), which takes time in
  proportion to the layer's parameters (``arithmetic.export_s``).

What quantization costs in loss, in nats on held-out data: 4-bit loses more on
smaller models, as published perplexities show (AWQ's table of LLaMA on WikiText-2:
GPTQ g128 adds ~0.03 nats to LLaMA-7B, ~0.02 to 65B; RTN-like NF4 more; LLM.int8
none measurable). ``LOSS_INCREASE_7B`` at 7B parameters scaled by
``(7e9 / N) ** SIZE_EXPONENT`` (the exponent those two sizes give). The quantized
model is evaluated on the same validation batches as the final evaluation.

What it costs in benchmark scores (``fakehw.train.benchmarks.quantized_score``): each
task's share above chance shrinks by exp(-sensitivity x the loss increase). Qwen's
published BF16/Int8/Int4 (GPTQ) table of Qwen-7B-Chat gives MMLU 55.8/55.4/55.1 and
C-Eval 59.7/59.4/59.2: ~2 % of the share above chance for GPTQ's ~0.03 nats, about
0.6 per nat, on tasks scored by likelihood; its GSM8K fell 50.3 -> 48.3 at Int8, as a
chain of thought compounds each token's error over hundreds of tokens: generated
answers lose about twice as much.
"""

from __future__ import annotations

import math
import random

CALIBRATION_SAMPLES = 128  # AutoGPTQ's and llm-compressor's usual calibration set
CALIBRATION_SEQ = 2048
MODULES_PER_LAYER = (  # in AutoGPTQ's order
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.q_proj",
    "self_attn.o_proj",
    "mlp.up_proj",
    "mlp.gate_proj",
    "mlp.down_proj",
)
LOSS_INCREASE_7B = {"int8": 0.002, "int4": 0.045, "gptq": 0.03}
SIZE_EXPONENT = 0.18
BITS_PER_WEIGHT = {"int8": 8.3, "int4": 4.15, "gptq": 4.15}  # with scales (and zeros)
SCORE_SENSITIVITY = {"loglikelihood": 0.6, "generate_until": 1.2}  # per nat of loss
LABELS = {
    "int8": "INT8 (bitsandbytes LLM.int8)",
    "int4": "INT4 (NF4)",
    "gptq": "GPTQ 4-bit, group size 128",
}


def loss_increase(method: str, params: int) -> float:
    """Nats the quantized weights add to the held-out loss of a model of ``params``."""
    return LOSS_INCREASE_7B[method] * float((7e9 / params) ** SIZE_EXPONENT)


def quantized_bytes(method: str, params: int) -> int:
    return int(params * BITS_PER_WEIGHT[method] / 8)


def layer_errors(layers: int, rng: random.Random) -> list[float]:
    """GPTQ's per-layer output error on the calibration set, which grows with depth as
    the hidden states' magnitude does."""
    return [
        0.02 * (1 + 4 * i / max(1, layers - 1)) ** 2 * math.exp(rng.gauss(0, 0.15))
        for i in range(layers)
    ]
