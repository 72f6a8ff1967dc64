"""Tiny random-weight demo models, generated from a fixed seed so that tests and first runs need no downloads.

Writes a llama-architecture GGUF (with a byte-level BPE tokenizer trained with `tokenizers` and a ChatML
chat template), an embedding GGUF, the chat model's weights again as MLX folders (see demo_mlx.py), vision
models for both backends (demo_vision.py, demo_vision_gguf.py), and a `models.yaml` serving them. The same
command twice writes identical files. Weights are kept in Hugging Face layout in memory so that other formats
can be written from the same numbers.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

DEMO_FORMAT_VERSION = "5"
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
BOS_TOKEN = "<|endoftext|>"

_WORDS = (
    "the a local model server runs on your own machine and answers every client that speaks the openai or "
    "ollama api tokens stream back as they are made while the router keeps a few models loaded and swaps "
    "them when asked small tests check structure counts stop strings and seeds because random weights write "
    "gibberish quick brown fox jumps over lazy dog hello world chat user assistant system prompt answer "
    "question image vision embed vector cache batch queue thread worker llama mlx gguf yaml python"
).split()

Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelShape:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 192
    vocab: int = 512
    context: int = 2048
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5


@dataclass(slots=True)
class TrainedTokenizer:
    tokenizer_json: str
    tokens: list[str]
    merges: list[str]

    def token_id(self, token: str) -> int:
        return self.tokens.index(token)


def _corpus() -> list[str]:
    rng = random.Random(1234)
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))).capitalize() + ".")
    lines.append("0123456789 +-*/=()[]{}<>,.;:!?'\"` ~@#$%^&_|\\")
    return lines


def train_tokenizer(vocab_size: int) -> TrainedTokenizer:
    """A byte-level BPE tokenizer (GPT-2 pre-tokenization), trained on a fixed corpus: deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return TrainedTokenizer(tok.to_str(), tokens, merges)


def random_weights(shape: ModelShape, vocab: int, seed: int, eos_id: int) -> dict[str, Array]:
    """Llama weights in Hugging Face layout and naming (`model.layers.N.self_attn.q_proj.weight`, ...)."""
    rng = np.random.default_rng(seed)
    head_dim = shape.hidden // shape.heads

    def dense(rows: int, cols: int) -> Array:
        values: Array = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        return values

    w: dict[str, Array] = {"model.embed_tokens.weight": rng.standard_normal((vocab, shape.hidden)).astype(np.float32)}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(shape.hidden, dtype=np.float32)
        w[p + "self_attn.q_proj.weight"] = dense(shape.heads * head_dim, shape.hidden)
        w[p + "self_attn.k_proj.weight"] = dense(shape.kv_heads * head_dim, shape.hidden)
        w[p + "self_attn.v_proj.weight"] = dense(shape.kv_heads * head_dim, shape.hidden)
        w[p + "self_attn.o_proj.weight"] = dense(shape.hidden, shape.heads * head_dim)
        w[p + "post_attention_layernorm.weight"] = np.ones(shape.hidden, dtype=np.float32)
        w[p + "mlp.gate_proj.weight"] = dense(shape.ffn, shape.hidden)
        w[p + "mlp.up_proj.weight"] = dense(shape.ffn, shape.hidden)
        w[p + "mlp.down_proj.weight"] = dense(shape.hidden, shape.ffn)
    w["model.norm.weight"] = np.ones(shape.hidden, dtype=np.float32)
    lm_head = dense(vocab, shape.hidden) * 4.0
    # A zero row gives the end-of-sequence token logit 0 while others spread around it, so greedy decoding
    # runs to max_tokens: tests can count tokens. Sampling still ends early now and then, as real models do.
    lm_head[eos_id] = 0.0
    w["lm_head.weight"] = lm_head
    return w


def _rope_permute(weight: Array, heads: int) -> Array:
    """Hugging Face stores rotary halves split per head; GGUF expects them interleaved."""
    rows = weight.shape[0]
    split = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    permuted: Array = split.swapaxes(1, 2).reshape(weight.shape)
    return permuted


def write_llama_gguf(
    path: Path,
    shape: ModelShape,
    weights: dict[str, Array],
    tokenizer: TrainedTokenizer,
    *,
    name: str,
    embedding: bool = False,
    f16: bool = False,
) -> None:
    """`f16` stores the matrices as float16 (norm vectors stay float32, as llama.cpp's converter does)."""
    import gguf

    if f16:
        weights = {k: v.astype(np.float16) if v.ndim == 2 else v for k, v in weights.items()}

    # The gguf writer logs every file at INFO; that is noise in a server's start-up log.
    logging.getLogger("gguf").setLevel(logging.WARNING)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokenizer.tokens)
    special = set(SPECIAL_TOKENS)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokenizer.tokens]
    )
    writer.add_token_merges(tokenizer.merges)
    writer.add_bos_token_id(tokenizer.token_id(BOS_TOKEN))
    writer.add_eos_token_id(tokenizer.token_id(EOS_TOKEN))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(shape.layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", weights[p + "input_layernorm.weight"])
        writer.add_tensor(b + "attn_q.weight", _rope_permute(weights[p + "self_attn.q_proj.weight"], shape.heads))
        writer.add_tensor(b + "attn_k.weight", _rope_permute(weights[p + "self_attn.k_proj.weight"], shape.kv_heads))
        writer.add_tensor(b + "attn_v.weight", weights[p + "self_attn.v_proj.weight"])
        writer.add_tensor(b + "attn_output.weight", weights[p + "self_attn.o_proj.weight"])
        writer.add_tensor(b + "ffn_norm.weight", weights[p + "post_attention_layernorm.weight"])
        writer.add_tensor(b + "ffn_gate.weight", weights[p + "mlp.gate_proj.weight"])
        writer.add_tensor(b + "ffn_up.weight", weights[p + "mlp.up_proj.weight"])
        writer.add_tensor(b + "ffn_down.weight", weights[p + "mlp.down_proj.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])

    tmp = path.with_suffix(path.suffix + ".tmp")
    writer.path = tmp
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)


def _models_yaml() -> str:
    from heylook_llm.demo_vision_gguf import DEMO_VISION_GGUF_PROJECTOR

    return f"""\
# Demo models written by `heylookllm demo-models` (format {DEMO_FORMAT_VERSION}).
# Tiny random-weight models: they exercise the real loading and generation code, and their text is gibberish.
# To serve real models, write your own models.yaml (see the README) and pass it with --config.
default_model: demo-gguf
max_loaded_models: 2
models:
  - id: demo-gguf
    provider: llama_cpp
    description: Tiny random-weight llama model (GGUF, llama.cpp) for tests and first runs
    tags: [demo, chat]
    config:
      model_path: demo-gguf.gguf
      n_ctx: 2048
  - id: demo-embed-gguf
    provider: llama_cpp
    description: Tiny random-weight llama model with mean pooling, for embeddings
    tags: [demo, embedding]
    config:
      model_path: demo-embed-gguf.gguf
      n_ctx: 512
      n_threads: 2
      embedding: true
  - id: demo-mlx
    provider: mlx
    description: The same tiny random-weight llama model as demo-gguf, as an MLX folder (mlx-lm)
    tags: [demo, chat]
    config:
      model_path: demo-mlx
  - id: demo-vision-mlx
    provider: mlx
    description: Tiny random-weight llava model (CLIP vision tower, demo llama) for images through mlx-vlm
    tags: [demo, chat, vision]
    config:
      model_path: demo-vision-mlx
      vision: true
  - id: demo-vision-gguf
    provider: llama_cpp
    description: The demo-gguf model with a tiny random-weight CLIP projector (mmproj) for images through llama.cpp
    tags: [demo, chat, vision]
    config:
      model_path: demo-gguf.gguf
      mmproj_path: {DEMO_VISION_GGUF_PROJECTOR}
      n_ctx: 2048
      n_threads: 2
"""


def write_demo_models(output: Path) -> Path:
    """Write the demo models and `output/models.yaml`; returns the yaml path. Deterministic."""
    output.mkdir(parents=True, exist_ok=True)
    shape = ModelShape()
    tokenizer = train_tokenizer(shape.vocab)
    vocab = len(tokenizer.tokens)
    eos_id = tokenizer.token_id(EOS_TOKEN)
    chat = random_weights(shape, vocab, seed=0, eos_id=eos_id)
    write_llama_gguf(output / "demo-gguf.gguf", shape, chat, tokenizer, name="demo-gguf")
    embed = random_weights(shape, vocab, seed=1, eos_id=eos_id)
    write_llama_gguf(output / "demo-embed-gguf.gguf", shape, embed, tokenizer, name="demo-embed-gguf", embedding=True)
    from heylook_llm.demo_mlx import write_demo_mlx_models

    write_demo_mlx_models(output, shape, chat, tokenizer)
    from heylook_llm.demo_vision import DEMO_VISION_MLX_DIR, write_vision_mlx_model

    write_vision_mlx_model(output / DEMO_VISION_MLX_DIR, shape, tokenizer)
    from heylook_llm.demo_vision_gguf import DEMO_VISION_GGUF_PROJECTOR, write_vision_projector_gguf

    write_vision_projector_gguf(output / DEMO_VISION_GGUF_PROJECTOR, shape.hidden)
    yaml_path = output / "models.yaml"
    yaml_path.write_text(_models_yaml(), encoding="utf-8")
    return yaml_path


def demo_models_current(output: Path) -> bool:
    """True when `output` holds demo models of the current format (so start-up need not rewrite them)."""
    yaml_path = output / "models.yaml"
    if not yaml_path.is_file():
        return False
    head = yaml_path.read_text(encoding="utf-8").splitlines()[:1]
    from heylook_llm.demo_mlx import DEMO_MLX_DIR, DEMO_MLX_DRAFT_DIR, MLX_MODEL_FILES

    files = ["demo-gguf.gguf", "demo-embed-gguf.gguf"]
    files += [f"{folder}/{name}" for folder in (DEMO_MLX_DIR, DEMO_MLX_DRAFT_DIR) for name in MLX_MODEL_FILES]
    from heylook_llm.demo_vision import DEMO_VISION_MLX_DIR, VISION_MODEL_FILES

    files += [f"{DEMO_VISION_MLX_DIR}/{name}" for name in VISION_MODEL_FILES]
    from heylook_llm.demo_vision_gguf import DEMO_VISION_GGUF_PROJECTOR

    files.append(DEMO_VISION_GGUF_PROJECTOR)
    return bool(head) and f"(format {DEMO_FORMAT_VERSION})" in head[0] and all((output / f).is_file() for f in files)
