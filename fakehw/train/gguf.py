"""A model's GGUF file, as llama.cpp's converter and quantizer would write it: the
model's Hugging Face tensors (``fakehw.train.tensors``) under GGUF's names
(``blk.3.attn_q.weight``; a mixture of experts merged into ``ffn_gate_exps``...), each
in the quantization type the file's type gives it, and the file's exact size;
fake-train writes the header (metadata and tensor infos) and leaves the data sparse,
so a GGUF reader (the ``gguf`` package's ``GGUFReader``) opens it.

Types: F16 and Q8_0 files keep 1-D tensors (norms, biases) and the MoE router in F32;
Q4_K_M gives most matrices Q4_K and, as ``llama_tensor_get_type`` does, Q6_K to
``output.weight`` (``token_embd.weight`` when the embeddings are tied) and to
``attn_v``/``ffn_down`` of the layers ``use_more_bits`` picks;
a matrix whose rows do not split into 256-element super-blocks falls back to Q8_0.
No tokenizer is written (it is not modelled).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from fakehw.train.catalog import Architecture
from fakehw.train.tensors import model_tensors

ALIGNMENT = 32  # general.alignment's default
# ggml type: (id, elements per block, bytes per block)
TYPES = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144),
         "Q6_K": (14, 256, 210)}  # fmt: skip
FILE_TYPES = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}  # llama_ftype
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen": "qwen2",
                 "olmo": "olmo2", "deepseek": "deepseek"}  # fmt: skip
# GGUF metadata value types
UINT32, FLOAT32, STRING = 4, 6, 8

Dims = tuple[int, ...]  # GGUF order: the innermost (row) dimension first


def architecture(arch: Architecture) -> str:
    if arch.family == "qwen" and arch.qk_norm:
        return "qwen3moe" if arch.experts else "qwen3"
    return ARCHITECTURES.get(arch.family, "llama")


# llama.cpp's converter: each Hugging Face tensor's GGUF name (a layer's ``blk.N.``)
RENAMES = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"blk.\1.attn_\2.\3"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight", r"blk.\1.attn_\2_norm.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blk.\1.post_ffw_norm.weight"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"blk.\1.ffn_\2.weight"),
    (r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.gate\.weight",
     r"blk.\1.ffn_gate_inp.weight"),
    (r"model\.layers\.(\d+)\.mlp\.shared_experts\.(gate|up|down)_proj\.weight",
     r"blk.\1.ffn_\2_shexp.weight"),
]  # fmt: skip
# one expert's matrix: merged with the layer's other experts into one 3-D tensor
EXPERT = re.compile(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.\d+\."
                    r"(gate_proj|up_proj|down_proj|w1|w3|w2)\.weight")  # fmt: skip
EXPERT_PART = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up",
               "down_proj": "down", "w2": "down"}  # fmt: skip


def gguf_name(hf_name: str, arch: Architecture) -> str:
    """The GGUF name of a Hugging Face tensor (not of an expert's: those are merged)."""
    norm = re.fullmatch(r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", hf_name)
    if norm:  # OLMo 2 normalises after attention; the others before the MLP
        return (
            f"blk.{norm[1]}.{'post_attention_norm' if arch.family == 'olmo' else 'ffn_norm'}.weight"
        )
    for pattern, template in RENAMES:
        renamed, count = re.subn(f"^{pattern}$", template, hf_name)
        if count:
            return renamed
    raise ValueError(f"no GGUF name for {hf_name}")


@lru_cache(maxsize=16)
def tensors(arch: Architecture) -> tuple[tuple[str, Dims], ...]:
    """The model's tensors under GGUF's names, in the converter's order: its Hugging Face
    tensors (``fakehw.train.tensors``) renamed, their dimensions innermost first, and
    each layer's experts merged into ``ffn_{gate,up,down}_exps`` where the first is."""
    listed: list[tuple[str, Dims]] = []
    merged: dict[str, int] = {}  # GGUF name: its place in ``listed``
    for hf_name, shape in model_tensors(arch):
        dims = tuple(reversed(shape))
        expert = EXPERT.fullmatch(hf_name)
        if expert is None:
            listed.append((gguf_name(hf_name, arch), dims))
            continue
        name = f"blk.{expert[1]}.ffn_{EXPERT_PART[expert[2]]}_exps.weight"
        if name not in merged:
            merged[name] = len(listed)
            listed.append((name, (*dims, arch.experts)))
    return tuple(listed)


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v and ffn_down get more bits."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_type(name: str, dims: Dims, quant: str, layers: int, tied: bool = False) -> str:
    """``tied``: the model has no output.weight, so token_embd.weight is its output."""
    if len(dims) == 1 or name.endswith("ffn_gate_inp.weight"):
        return "F32"
    if quant == "F16":
        return "F16"
    if quant == "Q8_0":
        return "Q8_0" if dims[0] % 32 == 0 else "F16"
    wanted = "Q4_K"
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        wanted = "Q6_K"
    elif ".attn_v." in name or ".ffn_down" in name:
        layer = int(name.split(".")[1])
        wanted = "Q6_K" if use_more_bits(layer, layers) else "Q4_K"
    if dims[0] % 256:
        return "Q8_0" if dims[0] % 32 == 0 else "F16"
    return wanted


def tensor_bytes(dims: Dims, kind: str) -> int:
    _, per_block, block_bytes = TYPES[kind]
    return math.prod(dims) // per_block * block_bytes


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _kv(key: str, kind: int, value: object) -> bytes:
    out = _string(key) + struct.pack("<I", kind)
    if kind == STRING:
        return out + _string(str(value))
    if kind == FLOAT32:
        return out + struct.pack("<f", value)
    return out + struct.pack("<I", value)


@dataclass(frozen=True)
class GgufFile:
    header: bytes  # everything before the (sparse) tensor data, padded to the alignment
    size: int
    tensors: tuple[tuple[str, Dims, str], ...]  # (name, dims, type)


@lru_cache(maxsize=32)
def gguf_file(arch: Architecture, name: str, quant: str) -> GgufFile:
    """The GGUF file of ``arch`` quantized as ``quant`` (F16, Q8_0, Q4_K_M)."""
    arch_name = architecture(arch)
    metadata = [
        _kv("general.architecture", STRING, arch_name),
        _kv("general.name", STRING, name),
        _kv("general.file_type", UINT32, FILE_TYPES[quant]),
        _kv("general.quantization_version", UINT32, 2),
        _kv(f"{arch_name}.context_length", UINT32, arch.max_seq),
        _kv(f"{arch_name}.embedding_length", UINT32, arch.hidden),
        _kv(f"{arch_name}.block_count", UINT32, arch.layers),
        _kv(f"{arch_name}.feed_forward_length", UINT32, arch.dense_ffn or arch.ffn),
        _kv(f"{arch_name}.attention.head_count", UINT32, arch.heads),
        _kv(f"{arch_name}.attention.head_count_kv", UINT32, arch.kv_heads),
        _kv(f"{arch_name}.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
        _kv(f"{arch_name}.rope.freq_base", FLOAT32, arch.rope_theta),
    ]
    if arch.experts:
        metadata += [_kv(f"{arch_name}.expert_count", UINT32, arch.experts),
                     _kv(f"{arch_name}.expert_used_count", UINT32, arch.top_k)]  # fmt: skip
    listed = tuple((n, dims, tensor_type(n, dims, quant, arch.layers, arch.tied_embeddings))
                   for n, dims in tensors(arch))  # fmt: skip
    infos, offset = [], 0
    for tensor_name, dims, kind in listed:
        infos.append(_string(tensor_name) + struct.pack("<I", len(dims))
                     + struct.pack(f"<{len(dims)}Q", *dims)
                     + struct.pack("<IQ", TYPES[kind][0], offset))  # fmt: skip
        offset += tensor_bytes(dims, kind)
        offset += -offset % ALIGNMENT
    head = b"GGUF" + struct.pack("<IQQ", 3, len(listed), len(metadata))
    head += b"".join(metadata) + b"".join(infos)
    head += b"\0" * (-len(head) % ALIGNMENT)
    return GgufFile(head, len(head) + offset, listed)
