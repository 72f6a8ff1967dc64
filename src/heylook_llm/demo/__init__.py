"""Tiny random-weight demo models, generated from a fixed seed so that tests and first runs need no downloads.

`write_demo_models` writes a llama-architecture GGUF (with a byte-level BPE tokenizer trained with `tokenizers`
and a ChatML chat template), an embedding GGUF, the chat model's weights again as MLX folders, vision models
for both backends, a reranker GGUF, and a `models.yaml` serving them. The same command twice writes identical files.

The package's modules are layered, each importing only those above it:

- tokenizer.py, weights.py, files.py: the shared tokenizer, the llama shape and random weights (Hugging Face
  layout, so every format is written from the same numbers), and JSON writing;
- vision_weights.py: the CLIP vision tower and llava projector shape and weights;
- gguf_writer.py, mlx_writer.py, vision_mlx.py, vision_gguf.py: one writer per format; rerank_gguf.py: the
  reranker, whose weights are chosen so its scores are predictable;
- this module: the whole demo set, its `models.yaml`, and the names callers import.
"""

from __future__ import annotations

from pathlib import Path

from heylook_llm.demo.gguf_writer import write_llama_gguf
from heylook_llm.demo.mlx_writer import (
    DEMO_MLX_DIR,
    DEMO_MLX_DRAFT_DIR,
    MLX_MODEL_FILES,
    write_demo_mlx_models,
    write_mlx_model,
    write_random_mlx_model,
)
from heylook_llm.demo.rerank_gguf import DEMO_RERANK_GGUF, RERANK_MARKER_WORD, write_rerank_gguf
from heylook_llm.demo.tokenizer import (
    BOS_TOKEN,
    CHATML_TEMPLATE,
    EOS_TOKEN,
    HERMES_TOOLS_TEMPLATE,
    SPECIAL_TOKENS,
    THINK_TEMPLATE,
    TrainedTokenizer,
    train_tokenizer,
)
from heylook_llm.demo.vision_gguf import DEMO_VISION_GGUF_PROJECTOR, write_vision_projector_gguf
from heylook_llm.demo.vision_mlx import DEMO_VISION_MLX_DIR, VISION_MODEL_FILES, write_vision_mlx_model
from heylook_llm.demo.vision_weights import VisionShape
from heylook_llm.demo.weights import Array, ModelShape, random_weights

__all__ = [
    "BOS_TOKEN",
    "CHATML_TEMPLATE",
    "DEMO_FORMAT_VERSION",
    "DEMO_MLX_DIR",
    "DEMO_MLX_DRAFT_DIR",
    "DEMO_RERANK_GGUF",
    "DEMO_VISION_GGUF_PROJECTOR",
    "DEMO_VISION_MLX_DIR",
    "EOS_TOKEN",
    "MLX_MODEL_FILES",
    "RERANK_MARKER_WORD",
    "SPECIAL_TOKENS",
    "VISION_MODEL_FILES",
    "Array",
    "ModelShape",
    "TrainedTokenizer",
    "VisionShape",
    "demo_models_current",
    "random_weights",
    "train_tokenizer",
    "write_demo_models",
    "write_llama_gguf",
    "write_mlx_model",
    "write_random_mlx_model",
    "write_rerank_gguf",
    "write_vision_mlx_model",
    "write_vision_projector_gguf",
]

DEMO_FORMAT_VERSION = "8"
DEMO_TOOLS_GGUF = "demo-tools-gguf.gguf"
DEMO_TOOLS_MLX_DIR = "demo-tools-mlx"
DEMO_THINK_GGUF = "demo-think-gguf.gguf"
DEMO_THINK_MLX_DIR = "demo-think-mlx"


def _models_yaml() -> str:
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
  - id: demo-tools-gguf
    provider: llama_cpp
    description: The demo-gguf weights with a Hermes/Qwen-style tool-calling chat template (GGUF)
    tags: [demo, chat, tools]
    config:
      model_path: {DEMO_TOOLS_GGUF}
      n_ctx: 2048
  - id: demo-tools-mlx
    provider: mlx
    description: The demo-gguf weights with a Hermes/Qwen-style tool-calling chat template (MLX folder)
    tags: [demo, chat, tools]
    config:
      model_path: {DEMO_TOOLS_MLX_DIR}
  - id: demo-think-gguf
    provider: llama_cpp
    description: The demo-gguf weights with a <think> reasoning template, as DeepSeek-R1's and Qwen3's (GGUF)
    tags: [demo, chat, reasoning]
    config:
      model_path: {DEMO_THINK_GGUF}
      n_ctx: 2048
  - id: demo-think-mlx
    provider: mlx
    description: The demo-gguf weights with a <think> reasoning template, as DeepSeek-R1's and Qwen3's (MLX folder)
    tags: [demo, chat, reasoning]
    config:
      model_path: {DEMO_THINK_MLX_DIR}
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
  - id: demo-rerank-gguf
    provider: llama_cpp
    description: Tiny Qwen3-style reranker (GGUF, rank pooling); documents that say "{RERANK_MARKER_WORD}" score highest
    tags: [demo, rerank]
    config:
      model_path: {DEMO_RERANK_GGUF}
      n_ctx: 2048
      n_threads: 2
      rerank: true
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
    write_demo_mlx_models(output, shape, chat, tokenizer)
    # The same weights with a Hermes/Qwen-style template, so tool calls run on both backends.
    write_llama_gguf(
        output / DEMO_TOOLS_GGUF, shape, chat, tokenizer, name="demo-tools", chat_template=HERMES_TOOLS_TEMPLATE
    )
    write_mlx_model(output / DEMO_TOOLS_MLX_DIR, shape, chat, tokenizer, chat_template=HERMES_TOOLS_TEMPLATE)
    # And with a think section, so reasoning runs on both backends.
    write_llama_gguf(output / DEMO_THINK_GGUF, shape, chat, tokenizer, name="demo-think", chat_template=THINK_TEMPLATE)
    write_mlx_model(output / DEMO_THINK_MLX_DIR, shape, chat, tokenizer, chat_template=THINK_TEMPLATE)
    write_vision_mlx_model(output / DEMO_VISION_MLX_DIR, shape, tokenizer)
    write_vision_projector_gguf(output / DEMO_VISION_GGUF_PROJECTOR, shape.hidden)
    write_rerank_gguf(output / DEMO_RERANK_GGUF, tokenizer)
    yaml_path = output / "models.yaml"
    yaml_path.write_text(_models_yaml(), encoding="utf-8")
    return yaml_path


def demo_models_current(output: Path) -> bool:
    """True when `output` holds demo models of the current format (so start-up need not rewrite them)."""
    yaml_path = output / "models.yaml"
    if not yaml_path.is_file():
        return False
    head = yaml_path.read_text(encoding="utf-8").splitlines()[:1]
    files = ["demo-gguf.gguf", "demo-embed-gguf.gguf", DEMO_TOOLS_GGUF, DEMO_THINK_GGUF]
    files += [f"{folder}/{name}" for folder in (DEMO_TOOLS_MLX_DIR, DEMO_THINK_MLX_DIR) for name in MLX_MODEL_FILES]
    files += [f"{folder}/{name}" for folder in (DEMO_MLX_DIR, DEMO_MLX_DRAFT_DIR) for name in MLX_MODEL_FILES]
    files += [f"{DEMO_VISION_MLX_DIR}/{name}" for name in VISION_MODEL_FILES]
    files += [DEMO_VISION_GGUF_PROJECTOR, DEMO_RERANK_GGUF]
    return bool(head) and f"(format {DEMO_FORMAT_VERSION})" in head[0] and all((output / f).is_file() for f in files)
