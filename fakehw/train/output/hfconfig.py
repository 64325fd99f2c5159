"""A model's Hugging Face files (``config.json``, ``generation_config.json``) as
``save_pretrained`` writes them, from the catalog's architecture: in an HF checkpoint
and in every run's safetensors export."""

from __future__ import annotations

import json

from fakehw.train.catalog import Architecture

TRANSFORMERS_VERSION = "5.17.0"

# model_type and the architectures entry of config.json, by the catalog's family
HF_ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "mixtral": ("mixtral", "MixtralForCausalLM"),
    "qwen": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeForCausalLM"),
    "olmo": ("olmo2", "Olmo2ForCausalLM"),
    "deepseek": ("deepseek_v2", "DeepseekV2ForCausalLM"),
}


def dumps(data: object) -> bytes:
    """JSON as transformers writes it: keys sorted, two-space indent, a final newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def model_config(arch: Architecture) -> dict[str, object]:
    family = arch.family
    if family == "qwen" and arch.qk_norm:
        family = "qwen3_moe" if arch.experts else "qwen3"
    model_type, architecture = HF_ARCHITECTURES.get(family, ("llama", "LlamaForCausalLM"))
    config: dict[str, object] = {
        "architectures": [architecture],
        "attention_bias": arch.qkv_bias,
        "attention_dropout": 0.0,
        "bos_token_id": None,  # a model built from its config, as the real capture's
        "eos_token_id": None,
        "dtype": "bfloat16",
        "head_dim": arch.head_dim,
        "hidden_act": "silu",
        "hidden_size": arch.hidden,
        "initializer_range": 0.02,
        "intermediate_size": arch.ffn,
        "max_position_embeddings": arch.max_seq,
        "mlp_bias": False,
        "model_type": model_type,
        "num_attention_heads": arch.heads,
        "num_hidden_layers": arch.layers,
        "num_key_value_heads": arch.kv_heads,
        "pad_token_id": None,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {
            "rope_theta": arch.rope_theta,
            "rope_type": "default",
        },
        "tie_word_embeddings": arch.tied_embeddings,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": False,
        "vocab_size": arch.vocab,
    }
    if arch.experts:
        config["num_local_experts" if family == "mixtral" else "num_experts"] = arch.experts
        config["num_experts_per_tok"] = arch.top_k
    return config


def generation_config() -> dict[str, object]:
    return {
        "_from_model_config": True,
        "output_attentions": False,
        "output_hidden_states": False,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
    }


def model_files(arch: Architecture) -> dict[str, bytes]:
    """``config.json`` and ``generation_config.json`` with their contents."""
    return {
        "config.json": dumps(model_config(arch)),
        "generation_config.json": dumps(generation_config()),
    }
