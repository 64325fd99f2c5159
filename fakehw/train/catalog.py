"""Models, datasets and tasks fake-train can play, real ones and parodies.

Architectures are real shapes (layers, hidden size, heads, vocabulary, MoE
experts); the parameter count is computed from them (``Architecture.params``),
never typed in, so a parody of Llama 3 8B has Llama 3 8B's 8.03 B parameters.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Architecture:
    family: str  # "llama", "mixtral", "qwen" ... (what the layer names look like)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int  # SwiGLU intermediate size (per expert for MoE)
    vocab: int
    max_seq: int
    experts: int = 0  # 0: dense
    top_k: int = 0
    shared_experts: int = 0
    tied_embeddings: bool = False
    reasoning: bool = False
    head_size: int = 0  # 0: hidden // heads (Qwen3 uses 128 whatever the width)
    qk_norm: bool = False  # RMSNorm on queries and keys (Qwen3)
    qkv_bias: bool = False  # biases on the query, key and value projections (Qwen2, Qwen2.5)
    dense_layers: int = 0  # MoE: leading layers with a dense FFN (DeepSeekMoE: the first)
    dense_ffn: int = 0  # their intermediate size
    rope_base: float = 0.0  # RoPE's rope_theta where the model departs from its family's

    @property
    def rope_theta(self) -> float:
        return self.rope_base or ROPE_THETA.get(self.family, 10000.0)

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads

    def _attention(self) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        biases = q + 2 * kv if self.qkv_bias else 0
        return 2 * self.hidden * q + 2 * self.hidden * kv + biases

    def _mlp(self, experts: int) -> int:
        return 3 * self.hidden * self.ffn * experts

    def _embeddings(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def _dense_layers(self) -> int:
        """What the leading dense layers of an MoE hold."""
        per_layer = self._attention() + 3 * self.hidden * self.dense_ffn + self._norms()
        return self.dense_layers * per_layer

    @property
    def params(self) -> int:
        """All parameters: embeddings, attention, MLPs (every expert), norms."""
        experts = max(1, self.experts) + self.shared_experts
        router = self.hidden * self.experts
        per_layer = self._attention() + self._mlp(experts) + router + self._norms()
        moe_layers = self.layers - self.dense_layers
        return self._embeddings() + moe_layers * per_layer + self._dense_layers() + self.hidden

    def _norms(self) -> int:
        return 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)

    @property
    def active_params(self) -> int:
        """Parameters one token goes through (MoE: only its top-k experts)."""
        if not self.experts:
            return self.params
        experts = self.top_k + self.shared_experts
        router = self.hidden * self.experts
        per_layer = self._attention() + self._mlp(experts) + router + self._norms()
        moe_layers = self.layers - self.dense_layers
        return self._embeddings() + moe_layers * per_layer + self._dense_layers() + self.hidden

    @property
    def expert_params(self) -> int:
        """The routed experts' parameters (what expert parallelism splits)."""
        return (self.layers - self.dense_layers) * self._mlp(self.experts)

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


# RoPE's base frequency (rope_theta) by family, as the real models' configs give it
ROPE_THETA = {"llama": 500000.0, "mistral": 1000000.0, "mixtral": 1000000.0, "qwen": 1000000.0,
              "olmo": 500000.0, "deepseek": 10000.0}  # fmt: skip

LLAMA3_8B = Architecture("llama", 32, 4096, 32, 8, 14336, 128256, 8192)
LLAMA3_70B = Architecture("llama", 80, 8192, 64, 8, 28672, 128256, 8192)
LLAMA32_1B = Architecture("llama", 16, 2048, 32, 8, 8192, 128256, 8192, tied_embeddings=True)
LLAMA32_3B = Architecture("llama", 28, 3072, 24, 8, 8192, 128256, 8192, tied_embeddings=True)
MISTRAL_7B = Architecture("mistral", 32, 4096, 32, 8, 14336, 32768, 8192)
QWEN25_14B = Architecture("qwen", 48, 5120, 40, 8, 13824, 152064, 8192, qkv_bias=True)
QWEN3_4B = Architecture(
    "qwen",
    36,
    2560,
    32,
    8,
    9728,
    151936,
    32768,
    tied_embeddings=True,
    reasoning=True,
    head_size=128,
    qk_norm=True,
)
# The 2507 update of Qwen3-4B (Thinking and Instruct): the same network with a native
# 256K context (max_position_embeddings 262144, rope_theta 5e6, as its config.json has it)
QWEN3_4B_2507 = replace(QWEN3_4B, max_seq=262144, rope_base=5000000.0)
MIXTRAL_8X7B = Architecture("mixtral", 32, 4096, 32, 8, 14336, 32000, 8192, experts=8, top_k=2)
DEEPSEEK_MOE_16B = Architecture(
    "deepseek", 28, 2048, 16, 16, 1408, 102400, 4096, experts=64, top_k=6, shared_experts=2,
    dense_layers=1, dense_ffn=10944,
)  # fmt: skip
OLMO2_13B = Architecture("olmo", 40, 5120, 40, 40, 13824, 100352, 4096)


# lm-evaluation-harness scores of the real base models, as their model cards and
# technical reports give them (hellaswag acc_norm 0-shot, arc_easy acc 0-shot, mmlu
# 5-shot, gsm8k 5-shot exact match; approximations where a report used other settings).
PUBLISHED_SCORES: dict[str, dict[str, float]] = {
    "Llama-3.1-8B": {"hellaswag": 0.819, "arc_easy": 0.815, "mmlu": 0.662, "gsm8k": 0.509},
    "Llama-3.1-70B": {"hellaswag": 0.874, "arc_easy": 0.868, "mmlu": 0.789, "gsm8k": 0.804},
    "Llama-3.2-1B": {"hellaswag": 0.637, "arc_easy": 0.654, "mmlu": 0.312, "gsm8k": 0.064},
    "Llama-3.2-3B": {"hellaswag": 0.737, "arc_easy": 0.745, "mmlu": 0.581, "gsm8k": 0.276},
    "Mistral-7B-v0.3": {"hellaswag": 0.809, "arc_easy": 0.795, "mmlu": 0.622, "gsm8k": 0.363},
    "Qwen2.5-14B": {"hellaswag": 0.840, "arc_easy": 0.824, "mmlu": 0.797, "gsm8k": 0.828},
    "Qwen3-4B": {"hellaswag": 0.726, "arc_easy": 0.771, "mmlu": 0.730, "gsm8k": 0.878},
    "Mixtral-8x7B-v0.1": {"hellaswag": 0.864, "arc_easy": 0.842, "mmlu": 0.706, "gsm8k": 0.577},
    "OLMo-2-1124-13B": {"hellaswag": 0.835, "arc_easy": 0.826, "mmlu": 0.671, "gsm8k": 0.751},
    "DeepSeekMoE-16B": {"hellaswag": 0.772, "arc_easy": 0.767, "mmlu": 0.453, "gsm8k": 0.189},
}

# Chinese tasks (``fakehw.train.benchmarks.CHINESE_TASKS``) where the base model's
# scores are published: Tencent's Youtu-LLM model card measures Qwen3-4B-Base and
# Llama-3.1-8B under one harness (MMLU-ProX-Zh 5-shot 45.2 % / 25.4 %, MGSM-Zh 8-shot
# 69.7 % / 35.9 %). No source gives the other models' under these tasks.
PUBLISHED_CHINESE: dict[str, dict[str, float]] = {
    "Qwen3-4B": {"mmlu_prox_zh": 0.452, "mgsm_native_cot_zh": 0.697},
    "Llama-3.1-8B": {"mmlu_prox_zh": 0.254, "mgsm_native_cot_zh": 0.359},
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    arch: Architecture
    real: bool  # a real model's name, or a parody of one
    parody_of: str = ""
    # whose lm-eval scores it has: a real model with none published for these tasks
    # names the model it was trained from
    scores_from: str = ""

    @property
    def published(self) -> dict[str, float]:
        """The benchmark scores of the real model it is (or parodies) at full training."""
        return PUBLISHED_SCORES[self.scored_as] | PUBLISHED_CHINESE.get(self.scored_as, {})

    @property
    def scored_as(self) -> str:
        """The real model whose published scores it has."""
        return self.scores_from or (self.name if self.real else self.parody_of)

    @property
    def size_label(self) -> str:
        """The parameter count to one decimal, as model cards give it (Qwen2.5-14B has
        14.8B parameters, Llama-3.1-8B 8.0B, DeepSeekMoE-16B 16.4B)."""
        return f"{self.arch.params / 1e9:.1f}B"

    @property
    def name_size(self) -> str:
        """The size as the model's name states it ("14B", "8x7B"), which run names use;
        the parameter count where the name gives none."""
        sizes = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?(?:x\d+)?)B(?![a-z])", self.name)
        return f"{sizes[-1]}B" if sizes else self.size_label


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("Llama-3.1-8B", LLAMA3_8B, True),
    ModelEntry("Llama-3.1-70B", LLAMA3_70B, True),
    ModelEntry("Llama-3.2-1B", LLAMA32_1B, True),
    ModelEntry("Mistral-7B-v0.3", MISTRAL_7B, True),
    ModelEntry("Qwen2.5-14B", QWEN25_14B, True),
    ModelEntry("Qwen3-4B", QWEN3_4B, True),
    # Qwen's model card gives reasoning benchmarks only (AIME25 81.3, GPQA 65.8 ...):
    # the harness's four tasks are scored as its base model's
    ModelEntry("Qwen3-4B-Thinking-2507", QWEN3_4B_2507, True, scores_from="Qwen3-4B"),
    ModelEntry("Mixtral-8x7B-v0.1", MIXTRAL_8X7B, True),
    ModelEntry("OLMo-2-1124-13B", OLMO2_13B, True),
    ModelEntry("Llamba-3-8B", LLAMA3_8B, False, "Llama-3.1-8B"),
    ModelEntry("Alpacalypse-70B", LLAMA3_70B, False, "Llama-3.1-70B"),
    ModelEntry("TinyHorse-1B", LLAMA32_1B, False, "Llama-3.2-1B"),
    ModelEntry("Pony-3B", LLAMA32_3B, False, "Llama-3.2-3B"),
    ModelEntry("Mistrial-7B", MISTRAL_7B, False, "Mistral-7B-v0.3"),
    ModelEntry("Qwerty-14B", QWEN25_14B, False, "Qwen2.5-14B"),
    ModelEntry("Ponderosa-4B-Thinking", QWEN3_4B, False, "Qwen3-4B"),
    ModelEntry("Mixtape-8x7B", MIXTRAL_8X7B, False, "Mixtral-8x7B-v0.1"),
    ModelEntry("DeepSleep-MoE-16B", DEEPSEEK_MOE_16B, False, "DeepSeekMoE-16B"),
    ModelEntry("OLMost-13B", OLMO2_13B, False, "OLMo-2-1124-13B"),
)


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str  # "pretrain", "sft", "preference", "reasoning"
    tokens: int  # total tokens (for pretraining) or tokens per epoch
    samples: int
    real: bool
    # How hard its tokens are to predict, as a model's loss on them relative to the
    # reference data of its kind (web text for pretraining, English chat for fine-tunes):
    # code is far more predictable than prose, math's LaTeX and long step-by-step
    # reasoning traces more than chat; Chinese text is harder per token (more of it in
    # each token). The curves (``fakehw.train.learning``) are for the reference data.
    loss_factor: float = 1.0
    language: str = "en"
    domain: str = "general"
    default: bool = True  # one fake-train may choose when none is asked for

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]


DATASETS: tuple[Dataset, ...] = (
    Dataset("HuggingFaceFW/fineweb-edu", "pretrain", 1_300_000_000_000, 1_280_000_000, True),
    Dataset("allenai/dolma", "pretrain", 3_000_000_000_000, 4_367_000_000, True),
    Dataset("cerebras/SlimPajama-627B", "pretrain", 627_000_000_000, 590_394_625, True),
    Dataset(
        "togethercomputer/RedPajama-Data-V2", "pretrain", 30_000_000_000_000, 20_500_000_000, True
    ),
    Dataset(
        "acme-labs/CommonCrawl-Deluxe-9T", "pretrain", 9_000_000_000_000, 11_200_000_000, False
    ),
    Dataset("internal/webscrape-v7-dedup", "pretrain", 2_400_000_000_000, 3_100_000_000, False),
    Dataset("teknium/OpenHermes-2.5", "sft", 410_000_000, 1_001_551, True),
    Dataset("HuggingFaceH4/ultrachat_200k", "sft", 290_000_000, 207_865, True),
    Dataset("acme-labs/SlopInstruct-500k", "sft", 640_000_000, 500_000, False),
    Dataset("HuggingFaceH4/ultrafeedback_binarized", "preference", 120_000_000, 61_135, True),
    Dataset("Anthropic/hh-rlhf", "preference", 54_000_000, 160_800, True),
    Dataset("internal/vibes-preference-v2", "preference", 88_000_000, 94_000, False),
    Dataset(
        "open-r1/OpenR1-Math-220k", "reasoning", 1_100_000_000, 220_000, True, 0.8, domain="math"
    ),
    Dataset("acme-labs/ThinkHarder-CoT-1M", "reasoning", 2_600_000_000, 1_000_000, False, 0.85),
    # what a code or math share of a pretraining mixture reads (--mixture): StarCoder's
    # data (~250B tokens of The Stack's code, issues and notebooks) and OpenWebMath
    # (14.7B tokens in 6.3M pages, its paper's figures)
    Dataset(
        "bigcode/starcoderdata",
        "pretrain",
        250_000_000_000,
        305_000_000,
        True,
        0.6,
        domain="code",
        default=False,
    ),
    Dataset(
        "open-web-math/open-web-math",
        "pretrain",
        14_700_000_000,
        6_315_233,
        True,
        0.75,
        domain="math",
        default=False,
    ),
    # Chinese instructions (BELLE's 3.5M, their card's count) and parodies of domain
    # data whose answers reason in <thinking> tags before they answer
    Dataset(
        "BelleGroup/train_3.5M_CN", "sft", 1_050_000_000, 3_606_402, True, 1.15, "zh", default=False
    ),
    Dataset(
        "acme-labs/CryptoThink-zh-80k",
        "reasoning",
        310_000_000,
        80_000,
        False,
        0.95,
        "zh",
        "cryptography",
        default=False,
    ),
    Dataset(
        "acme-labs/CipherCoT-en-120k",
        "reasoning",
        420_000_000,
        120_000,
        False,
        0.88,
        domain="cryptography",
        default=False,
    ),
)

TASKS = ("pretrain", "sft", "dpo", "lora")
DATASET_KIND = {"pretrain": "pretrain", "sft": "sft", "dpo": "preference", "lora": "reasoning"}
# the kinds of data a task can train on (a fine-tune takes instructions or reasoning traces)
TRAINS_ON = {"pretrain": ("pretrain",), "sft": ("sft", "reasoning"), "lora": ("sft", "reasoning"),
             "dpo": ("preference",)}  # fmt: skip


class UnknownModel(ValueError):
    pass


def find_model(name: str) -> ModelEntry:
    wanted = name.strip().lower()
    for entry in MODELS:
        if entry.name.lower() == wanted:
            return entry
    close = difflib.get_close_matches(name, [m.name for m in MODELS], n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModel(f"unknown model {name!r}.{hint} (fake-train --list-models lists them)")


def find_dataset(name: str) -> Dataset:
    wanted = name.strip().lower()
    for entry in DATASETS:
        if entry.name.lower() == wanted or entry.name.split("/")[-1].lower() == wanted:
            return entry
    raise UnknownModel(f"unknown dataset {name!r}; known: {', '.join(d.name for d in DATASETS)}")
