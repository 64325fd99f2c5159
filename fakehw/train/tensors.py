"""A model's tensors by name and shape, as its Hugging Face checkpoint holds them, and
the safetensors files ``save_pretrained`` splits them into.

The names follow each family's modelling code in transformers (``model.layers.3.
self_attn.q_proj.weight``, Mixtral's ``block_sparse_moe.experts.5.w1.weight``, PEFT's
``base_model.model....lora_A.weight``); the shapes come from the catalog's
architecture, and their elements add up to its parameter count exactly. A shard is
written as safetensors lays a file out: an 8-byte little-endian header length, the
JSON header (dtype, shape and byte range of every tensor, space-padded to 8 bytes),
then the data; fake-train writes the header and leaves the data sparse (zeros, a valid
bf16 0.0), so ``safetensors.safe_open`` reads the file and its tensors.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache

from fakehw.train.catalog import Architecture

Tensor = tuple[str, tuple[int, ...]]
BF16_BYTES = 2
SAFETENSORS_SHARD_BYTES = 5 * 10**9  # save_pretrained's max_shard_size ("5GB")
INDEX_NAME = "model.safetensors.index.json"


def _attention(arch: Architecture, prefix: str) -> list[Tensor]:
    q, kv, h = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim, arch.hidden
    attn = f"{prefix}.self_attn"
    tensors: list[Tensor] = [
        (f"{attn}.q_proj.weight", (q, h)),
        (f"{attn}.k_proj.weight", (kv, h)),
        (f"{attn}.v_proj.weight", (kv, h)),
        (f"{attn}.o_proj.weight", (h, q)),
    ]
    if arch.qkv_bias:
        tensors += [(f"{attn}.q_proj.bias", (q,)), (f"{attn}.k_proj.bias", (kv,)),
                    (f"{attn}.v_proj.bias", (kv,))]  # fmt: skip
    if arch.qk_norm:
        tensors += [(f"{attn}.q_norm.weight", (arch.head_dim,)),
                    (f"{attn}.k_norm.weight", (arch.head_dim,))]  # fmt: skip
    return tensors


def _mlp(prefix: str, hidden: int, ffn: int, names: tuple[str, str, str]) -> list[Tensor]:
    gate, up, down = names
    return [
        (f"{prefix}.{gate}.weight", (ffn, hidden)),
        (f"{prefix}.{up}.weight", (ffn, hidden)),
        (f"{prefix}.{down}.weight", (hidden, ffn)),
    ]


def _norms(arch: Architecture, prefix: str) -> list[Tensor]:
    if arch.family == "olmo":  # OLMo 2 normalises after attention and after the MLP
        return [(f"{prefix}.post_attention_layernorm.weight", (arch.hidden,)),
                (f"{prefix}.post_feedforward_layernorm.weight", (arch.hidden,))]  # fmt: skip
    return [(f"{prefix}.input_layernorm.weight", (arch.hidden,)),
            (f"{prefix}.post_attention_layernorm.weight", (arch.hidden,))]  # fmt: skip


def _feed_forward(arch: Architecture, layer: int, prefix: str) -> list[Tensor]:
    h = arch.hidden
    swiglu = ("gate_proj", "up_proj", "down_proj")
    if not arch.experts or layer < arch.dense_layers:
        return _mlp(f"{prefix}.mlp", h, arch.dense_ffn or arch.ffn, swiglu)
    if arch.family == "mixtral":
        moe = f"{prefix}.block_sparse_moe"
        tensors: list[Tensor] = [(f"{moe}.gate.weight", (arch.experts, h))]
        for expert in range(arch.experts):
            tensors += _mlp(f"{moe}.experts.{expert}", h, arch.ffn, ("w1", "w3", "w2"))
        return tensors
    tensors = [(f"{prefix}.mlp.gate.weight", (arch.experts, h))]
    for expert in range(arch.experts):
        tensors += _mlp(f"{prefix}.mlp.experts.{expert}", h, arch.ffn, swiglu)
    if arch.shared_experts:  # DeepSeekMoE: the shared experts as one wider MLP
        tensors += _mlp(f"{prefix}.mlp.shared_experts", h, arch.ffn * arch.shared_experts,
                        swiglu)  # fmt: skip
    return tensors


@lru_cache(maxsize=16)
def model_tensors(arch: Architecture) -> tuple[Tensor, ...]:
    """Every tensor of the model, in its state dict's order."""
    tensors: list[Tensor] = [("model.embed_tokens.weight", (arch.vocab, arch.hidden))]
    for layer in range(arch.layers):
        prefix = f"model.layers.{layer}"
        tensors += _attention(arch, prefix)
        tensors += _feed_forward(arch, layer, prefix)
        tensors += _norms(arch, prefix)
    tensors.append(("model.norm.weight", (arch.hidden,)))
    if not arch.tied_embeddings:
        tensors.append(("lm_head.weight", (arch.vocab, arch.hidden)))
    return tuple(tensors)


def lora_tensors(arch: Architecture, rank: int, targets: tuple[str, ...]) -> tuple[Tensor, ...]:
    """PEFT's adapter tensors: ``lora_A`` (rank x in) and ``lora_B`` (out x rank) on
    each target projection of every layer."""
    h, kv = arch.hidden, arch.kv_heads * arch.head_dim
    q = arch.heads * arch.head_dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, arch.ffn), "up_proj": (h, arch.ffn),
              "down_proj": (arch.ffn, h)}  # fmt: skip
    where = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
             "o_proj": "self_attn"}  # fmt: skip
    tensors: list[Tensor] = []
    for layer in range(arch.layers):
        for target in targets:
            fan_in, fan_out = shapes[target]
            module = f"base_model.model.model.layers.{layer}.{where.get(target, 'mlp')}.{target}"
            tensors += [(f"{module}.lora_A.weight", (rank, fan_in)),
                        (f"{module}.lora_B.weight", (fan_out, rank))]  # fmt: skip
    return tuple(tensors)


def elements(tensors: tuple[Tensor, ...] | list[Tensor]) -> int:
    return sum(math.prod(shape) for _, shape in tensors)


@dataclass(frozen=True)
class Shard:
    name: str
    tensors: tuple[Tensor, ...]

    @property
    def data_bytes(self) -> int:
        return BF16_BYTES * elements(self.tensors)

    @property
    def header(self) -> bytes:
        """The file's first bytes: the header's length, then the header."""
        return safetensors_header(self.tensors)

    @property
    def file_bytes(self) -> int:
        return len(self.header) + self.data_bytes


def safetensors_header(tensors: tuple[Tensor, ...]) -> bytes:
    """safetensors' layout: data in the header's (sorted) order, the JSON padded with
    spaces to a multiple of 8, after its length as a little-endian u64."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in sorted(tensors):
        size = BF16_BYTES * math.prod(shape)
        entries[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


@lru_cache(maxsize=16)
def shards(tensors: tuple[Tensor, ...], stem: str = "model") -> tuple[Shard, ...]:
    """The files ``save_pretrained`` writes: tensors in order, a new shard whenever the
    next would pass ``max_shard_size``; one file needs no number."""
    groups: list[list[Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        tensor_bytes = BF16_BYTES * math.prod(tensor[1])
        if groups[-1] and size + tensor_bytes > SAFETENSORS_SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor_bytes
    if len(groups) == 1:
        return (Shard(f"{stem}.safetensors", tuple(groups[0])),)
    count = len(groups)
    return tuple(
        Shard(f"{stem}-{k:05d}-of-{count:05d}.safetensors", tuple(group))
        for k, group in enumerate(groups, 1)
    )


def index(shard_files: tuple[Shard, ...]) -> bytes:
    """``model.safetensors.index.json``: the total data size and each tensor's file."""
    weight_map = {name: shard.name for shard in shard_files for name, _ in shard.tensors}
    total = sum(shard.data_bytes for shard in shard_files)
    document = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of a save, their sizes, and what fake-train writes of them."""

    shards: tuple[Shard, ...]

    @property
    def files(self) -> list[tuple[str, int]]:
        listed = [(shard.name, shard.file_bytes) for shard in self.shards]
        if len(self.shards) > 1:
            listed.append((INDEX_NAME, len(index(self.shards))))
        return listed

    @property
    def heads(self) -> dict[str, bytes]:
        """Each shard's first bytes (its header); the rest of it is sparse."""
        return {shard.name: shard.header for shard in self.shards}

    @property
    def contents(self) -> dict[str, bytes]:
        return {INDEX_NAME: index(self.shards)} if len(self.shards) > 1 else {}

    @property
    def data_bytes(self) -> int:
        return sum(shard.data_bytes for shard in self.shards)


def weight_files(
    arch: Architecture, lora: tuple[int, tuple[str, ...]] | None = None
) -> WeightFiles:
    """A save's weights: the full model's shards, or (``lora`` = rank, targets) the
    adapter PEFT saves."""
    if lora is not None:
        rank, targets = lora
        return WeightFiles(shards(lora_tensors(arch, rank, targets), "adapter_model"))
    return WeightFiles(shards(model_tensors(arch)))
