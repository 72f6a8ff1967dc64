"""A llama-architecture GGUF file (Q4_0, Q4_1, Q8_0 or float tensors, byte-level BPE vocabulary) as an mlx-lm folder.

MLX reads GGUF itself (`mx.load(..., return_metadata=True)`) and turns Q4_0, Q4_1 and Q8_0 blocks into its own
affine quantization (group size 32: Q4_1's `d * q + m` is MLX's `scale * q + bias` exactly), so no weight is
dequantized. What remains is naming the tensors as Hugging Face does, undoing the row order llama.cpp's converter
gave the query and key projections (for its rotary embedding), writing config.json with the bits of each
quantized module, and building tokenizer.json from the GGUF vocabulary and merges with `tokenizers`.
K-quants (Q4_K, Q6_K, ...) are not among what MLX reads: such a file raises GgufConversionError.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Files of a converted folder; `source.json` records the GGUF file it came from (path, size, mtime).
CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "source.json")
_CONTROL_TOKEN = 3  # llama.cpp's token type for control tokens
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


class GgufConversionError(Exception):
    """The GGUF file cannot become an mlx-lm folder; the message says why."""


def _hf_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    block = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if block is not None and block.group(2) in _LAYER_NAMES:
        return f"model.layers.{block.group(1)}.{_LAYER_NAMES[block.group(2)]}.{suffix}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    raise GgufConversionError(f"tensor {gguf_name} has no place in an mlx-lm llama model")


def _unpermute(rows: Any, heads: int) -> Any:
    """Undo llama.cpp's reordering of a query/key projection's rows (each head's two rotary halves were
    interleaved); it moves whole rows, so packed weights, scales and biases are reordered alike."""
    n = rows.shape[0]
    return rows.reshape(heads, n // heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _meta(metadata: dict[str, Any], key: str) -> Any:
    if key not in metadata:
        raise GgufConversionError(f"the GGUF file has no {key}")
    value = metadata[key]
    return value.item() if hasattr(value, "item") and getattr(value, "size", 2) == 1 else value


def _merge(text: str) -> tuple[str, str]:
    left, space, right = text.partition(" ")
    if not space:
        raise GgufConversionError(f"merge {text!r} is not two tokens")
    return left, right


def _tokenizer_json(metadata: dict[str, Any]) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if str(_meta(metadata, "tokenizer.ggml.model")) != "gpt2":
        raise GgufConversionError("only byte-level BPE vocabularies (tokenizer.ggml.model gpt2) are converted")
    tokens = [str(t) for t in _meta(metadata, "tokenizer.ggml.tokens")]
    types = [int(t) for t in _meta(metadata, "tokenizer.ggml.token_type").tolist()]
    merges = [_merge(str(m)) for m in _meta(metadata, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    # llama.cpp's "smollm" (and "starcoder") pre-tokenizer: every digit alone, then GPT-2's split.
    split: list[Any] = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if str(metadata.get("tokenizer.ggml.pre", "")) in ("smollm", "starcoder", "refact", "codeshell"):
        split.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(split)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, kind in zip(tokens, types, strict=True)
            if kind == _CONTROL_TOKEN
        ]
    )
    text: str = tokenizer.to_str()
    return text


def _token_text(metadata: dict[str, Any], key: str) -> tuple[int, str]:
    token_id = int(_meta(metadata, key))
    return token_id, str(_meta(metadata, "tokenizer.ggml.tokens")[token_id])


def _config(metadata: dict[str, Any], weights: dict[str, Any], bos: int, eos: int) -> dict[str, Any]:
    arch = str(_meta(metadata, "general.architecture"))
    if arch != "llama":
        raise GgufConversionError(f"only llama-architecture GGUF files are converted, not {arch}")
    hidden = int(_meta(metadata, "llama.embedding_length"))
    heads = int(_meta(metadata, "llama.attention.head_count"))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_meta(metadata, "llama.block_count")),
        "intermediate_size": int(_meta(metadata, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(metadata.get("llama.attention.head_count_kv", heads)),
        "head_dim": hidden // heads,
        "max_position_embeddings": int(_meta(metadata, "llama.context_length")),
        "rms_norm_eps": float(_meta(metadata, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(metadata.get("llama.rope.freq_base", 10000.0)),
        "vocab_size": int(weights["model.embed_tokens.weight"].shape[0]),
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "bos_token_id": bos,
        "eos_token_id": eos,
    }
    quantization = _quantization(weights, hidden)
    if quantization:
        config["quantization"] = quantization
    return config


def _quantization(weights: dict[str, Any], hidden: int) -> dict[str, Any]:
    """mlx-lm's `quantization` entry: group size 32 (GGUF's block), the bits of each quantized module."""
    bits: dict[str, int] = {}
    for name, array in weights.items():
        if name.endswith(".scales"):
            module = name.removesuffix(".scales")
            packed = weights[f"{module}.weight"].shape[-1] * 32
            columns = array.shape[-1] * 32
            bits[module] = packed // columns
    if not bits:
        return {}
    common = max(set(bits.values()), key=list(bits.values()).count)
    out: dict[str, Any] = {"group_size": 32, "bits": common}
    out.update({m: {"group_size": 32, "bits": b} for m, b in sorted(bits.items()) if b != common})
    return out


def _source_record(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"path": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def converted_is_current(gguf: Path, folder: Path) -> bool:
    record = folder / "source.json"
    if not all((folder / name).is_file() for name in CONVERTED_FILES):
        return False
    try:
        return bool(json.loads(record.read_text(encoding="utf-8")) == _source_record(gguf))
    except (OSError, ValueError):
        return False


def convert_gguf_to_mlx(gguf: Path, folder: Path) -> Path:
    """Write the mlx-lm folder for `gguf` into `folder` (replaced whole, through a temporary folder)."""
    import mlx.core as mx

    try:
        result: Any = mx.load(str(gguf), return_metadata=True)
    except (RuntimeError, ValueError) as exc:  # MLX names the tensor type it does not read
        raise GgufConversionError(f"MLX cannot read {gguf.name}: {exc}") from exc
    loaded: dict[str, Any] = result[0]
    metadata: dict[str, Any] = result[1]
    weights: dict[str, Any] = {_hf_name(name): array for name, array in loaded.items()}
    bos, bos_text = _token_text(metadata, "tokenizer.ggml.bos_token_id")
    eos, eos_text = _token_text(metadata, "tokenizer.ggml.eos_token_id")
    config = _config(metadata, weights, bos, eos)
    for name in list(weights):
        if ".self_attn.q_proj." in name:
            weights[name] = _unpermute(weights[name], config["num_attention_heads"])
        elif ".self_attn.k_proj." in name:
            weights[name] = _unpermute(weights[name], config["num_key_value_heads"])
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos_text,
        "eos_token": eos_text,
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    template = metadata.get("tokenizer.chat_template")
    if template is not None:
        tokenizer_config["chat_template"] = str(template)
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (work / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    (work / "tokenizer.json").write_text(_tokenizer_json(metadata), encoding="utf-8")
    mx.save_safetensors(str(work / "model.safetensors"), weights, metadata={"format": "mlx"})
    (work / "source.json").write_text(json.dumps(_source_record(gguf)) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    work.replace(folder)
    log.info("converted %s to an MLX folder at %s", gguf.name, folder)
    return folder


def mlx_folder_for(gguf: Path, folder: Path) -> Path:
    """The converted folder, converting only when it is missing or the GGUF file changed."""
    if converted_is_current(gguf, folder):
        return folder
    return convert_gguf_to_mlx(gguf, folder)
