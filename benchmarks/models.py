"""Benchmark models: random-weight llamas written as a GGUF file and an MLX folder from the same numbers.

`tiny` is the demo shape (hidden 64, 2 layers, float32), where fixed per-token costs dominate. `50m` is a ~50M
parameter llama (hidden 768, 8 layers, ffn 2048) stored as float16, where the matrix work starts to count.
Both use the demo tokenizer. Files are cached under the results folder and rewritten only when the recipe
changes (the recipe is hashed into the folder name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heylook_llm.demo import (
    BOS_TOKEN,
    EOS_TOKEN,
    ModelShape,
    random_weights,
    train_tokenizer,
    write_llama_gguf,
    write_mlx_model,
)

RECIPE_VERSION = "1"
BENCH_CONTEXT = 4096
"""Context length written into the models and given to every server: room for the 5-turn chat."""


@dataclass(frozen=True, slots=True)
class ModelRecipe:
    name: str
    shape: ModelShape
    f16: bool
    seed: int = 0

    def key(self) -> str:
        data = {"v": RECIPE_VERSION, "shape": dataclasses.asdict(self.shape), "f16": self.f16, "seed": self.seed}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def parameter_count(self, vocab: int) -> int:
        s = self.shape
        head_dim = s.hidden // s.heads
        attention = 2 * s.hidden * s.heads * head_dim + 2 * s.hidden * s.kv_heads * head_dim
        per_layer = attention + 3 * s.hidden * s.ffn + 2 * s.hidden
        return s.layers * per_layer + 2 * vocab * s.hidden + s.hidden


RECIPES: dict[str, ModelRecipe] = {
    "tiny": ModelRecipe("tiny", dataclasses.replace(ModelShape(), context=BENCH_CONTEXT), f16=False),
    "50m": ModelRecipe(
        "50m",
        ModelShape(hidden=768, layers=8, heads=12, kv_heads=4, ffn=2048, vocab=512, context=BENCH_CONTEXT),
        f16=True,
    ),
}


@dataclass(frozen=True, slots=True)
class BenchModel:
    """Paths and facts of one generated model."""

    name: str
    gguf_path: Path
    mlx_dir: Path
    tokenizer_json: Path
    eos_ids: tuple[int, ...]
    """Token ids that end generation (BOS/end-of-text and end-of-turn): banned with logit_bias -100."""
    parameters: int
    dtype: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "gguf_path": str(self.gguf_path),
            "mlx_dir": str(self.mlx_dir),
            "eos_ids": list(self.eos_ids),
            "parameters": self.parameters,
            "dtype": self.dtype,
            "gguf_bytes": self.gguf_path.stat().st_size,
        }


def ensure_model(recipe: ModelRecipe, cache_dir: Path) -> BenchModel:
    """Write the model's GGUF file and MLX folder unless a finished copy of this recipe is already cached."""
    folder = cache_dir / f"{recipe.name}-{recipe.key()}"
    done_marker = folder / "complete.json"
    gguf_path = folder / f"bench-{recipe.name}.gguf"
    mlx_dir = folder / f"bench-{recipe.name}-mlx"
    if done_marker.is_file():
        facts = json.loads(done_marker.read_text())
        return BenchModel(
            recipe.name,
            gguf_path,
            mlx_dir,
            mlx_dir / "tokenizer.json",
            tuple(facts["eos_ids"]),
            facts["parameters"],
            facts["dtype"],
        )
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tokenizer = train_tokenizer(recipe.shape.vocab)
    vocab = len(tokenizer.tokens)
    eos_id = tokenizer.token_id(EOS_TOKEN)
    weights = random_weights(recipe.shape, vocab, seed=recipe.seed, eos_id=eos_id)
    # f16: the GGUF writer rounds the matrices to float16 and keeps the norm vectors (all ones) in float32;
    # the MLX folder gets every tensor in float16, so both hold the same numbers and MLX computes in float16.
    write_llama_gguf(gguf_path, recipe.shape, weights, tokenizer, name=f"bench-{recipe.name}", f16=recipe.f16)
    mlx_weights = {k: v.astype(np.float16) for k, v in weights.items()} if recipe.f16 else weights
    write_mlx_model(mlx_dir, recipe.shape, mlx_weights, tokenizer)  # type: ignore[arg-type]
    if recipe.f16:
        _mark_mlx_dtype(mlx_dir / "config.json", "float16")
    eos_ids = tuple(sorted({tokenizer.token_id(BOS_TOKEN), eos_id}))
    dtype = "float16" if recipe.f16 else "float32"
    parameters = recipe.parameter_count(vocab)
    done_marker.write_text(json.dumps({"eos_ids": list(eos_ids), "parameters": parameters, "dtype": dtype}))
    return BenchModel(recipe.name, gguf_path, mlx_dir, mlx_dir / "tokenizer.json", eos_ids, parameters, dtype)


def _mark_mlx_dtype(config_path: Path, dtype: str) -> None:
    config = json.loads(config_path.read_text())
    config["torch_dtype"] = dtype
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
