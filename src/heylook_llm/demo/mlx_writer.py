"""Demo models as MLX folders (the mlx-lm layout), written from the same numbers as the GGUF demo models.

A folder holds `config.json` (model_type llama), `model.safetensors` (float32, Hugging Face tensor names),
`tokenizer.json` and `tokenizer_config.json` (with the chat template and the BOS/EOS tokens). Only the
`safetensors` package is needed, not MLX itself, so `heylookllm demo-models` works on any machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safetensors.numpy import save_file

from heylook_llm.demo.files import write_json
from heylook_llm.demo.tokenizer import BOS_TOKEN, CHATML_TEMPLATE, EOS_TOKEN, TrainedTokenizer
from heylook_llm.demo.weights import Array, ModelShape, random_weights

DEMO_MLX_DIR = "demo-mlx"
DEMO_MLX_DRAFT_DIR = "demo-mlx-draft"
MLX_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def mlx_config(shape: ModelShape, vocab: int, bos_id: int, eos_id: int) -> dict[str, object]:
    """The `config.json` mlx-lm reads to build a llama model of this shape."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "intermediate_size": shape.ffn,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.hidden // shape.heads,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_theta,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def tokenizer_config(context: int, chat_template: str = CHATML_TEMPLATE) -> dict[str, object]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "chat_template": chat_template,
    }


def write_mlx_model(
    folder: Path,
    shape: ModelShape,
    weights: dict[str, Array],
    tokenizer: TrainedTokenizer,
    chat_template: str = CHATML_TEMPLATE,
) -> None:
    """Write one MLX model folder; the same inputs give byte-identical files."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = len(tokenizer.tokens)
    config = mlx_config(shape, vocab, tokenizer.token_id(BOS_TOKEN), tokenizer.token_id(EOS_TOKEN))
    write_json(folder / "config.json", config)
    write_json(folder / "tokenizer_config.json", tokenizer_config(shape.context, chat_template))
    (folder / "tokenizer.json").write_text(tokenizer.tokenizer_json, encoding="utf-8")
    tmp = folder / "model.safetensors.tmp"
    # safetensors orders tensors itself, so the file does not depend on dict order.
    save_file({name: w for name, w in weights.items()}, str(tmp), metadata={"format": "mlx"})
    tmp.replace(folder / "model.safetensors")


def draft_of(shape: ModelShape, weights: dict[str, Array], layers: int = 1) -> tuple[ModelShape, dict[str, Array]]:
    """A smaller model made of the first `layers` blocks of `weights`, with the same embeddings and head.

    Its next-token guesses agree with the full model's often enough that speculative decoding accepts some of
    them, which a random draft model of the same vocabulary would almost never do.
    """
    kept = {
        name: w
        for name, w in weights.items()
        if not name.startswith("model.layers.") or int(name.split(".")[2]) < layers
    }
    return dataclasses.replace(shape, layers=layers), kept


def write_demo_mlx_models(
    output: Path, shape: ModelShape, weights: dict[str, Array], tokenizer: TrainedTokenizer
) -> None:
    """`demo-mlx` (the same weights as demo-gguf) and `demo-mlx-draft` (its first block, for speculative decoding)."""
    write_mlx_model(output / DEMO_MLX_DIR, shape, weights, tokenizer)
    draft_shape, draft_weights = draft_of(shape, weights)
    write_mlx_model(output / DEMO_MLX_DRAFT_DIR, draft_shape, draft_weights, tokenizer)


def write_random_mlx_model(folder: Path, shape: ModelShape, tokenizer: TrainedTokenizer, seed: int) -> None:
    """A random-weight MLX model of any shape (tests use larger or differently shaped ones)."""
    weights = random_weights(shape, len(tokenizer.tokens), seed=seed, eos_id=tokenizer.token_id(EOS_TOKEN))
    write_mlx_model(folder, shape, weights, tokenizer)
