"""Backends, found through a table `provider -> "module:Class"` and imported lazily.

A machine without MLX still serves GGUF models; an MLX model there fails to load with the import error named.
"""

from __future__ import annotations

import importlib

from heylook_llm.backends.base import Backend
from heylook_llm.config.registry import MLXConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import ModelLoadError

BACKENDS: dict[str, str] = {
    "llama_cpp": "heylook_llm.backends.llama_cpp:LlamaCppBackend",
    "mlx": "heylook_llm.backends.mlx:MLXBackend",
    "mlx:vision": "heylook_llm.backends.mlx_vlm:MLXVisionBackend",
}
"""Keys are providers, or `provider:variant` where one provider has several loaders (see `backend_key`)."""

MLX_BATCHED = "heylook_llm.backends.mlx:MLXBatchedBackend"
"""The class for mlx-lm models that `mlx_batched` accepts. Not a key of `BACKENDS`: it lives in the "mlx" module,
and /v1/capabilities names both MLX text classes "mlx"."""


def backend_key(entry: ModelEntry) -> str:
    """The table key for an entry: MLX models with `vision: true` load through mlx-vlm, not mlx-lm."""
    if isinstance(entry.config, MLXConfig) and entry.config.vision:
        return f"{entry.provider}:vision"
    return entry.provider


def mlx_batched(config: MLXConfig) -> bool:
    """Whether an mlx-lm model runs through mlx-lm's BatchGenerator: several sequences asked for, and none of the
    settings it cannot batch (speculative decoding, rotating or quantized KV caches).

    A model whose own layers keep caches BatchGenerator cannot merge is only known once loaded; the batched
    backend then runs it one request at a time (see `MLXBatchedBackend.load`).
    """
    return config.parallel > 1 and config.draft_model_path is None and config.cache_type == "standard"


def backend_target(entry: ModelEntry) -> str | None:
    """The "module:Class" that runs `entry`, None for an unknown provider."""
    key = backend_key(entry)
    if key == "mlx" and isinstance(entry.config, MLXConfig) and mlx_batched(entry.config):
        return MLX_BATCHED
    return BACKENDS.get(key)


def create_backend(entry: ModelEntry, settings: ServerSettings) -> Backend:
    target = backend_target(entry)
    if target is None:
        raise ModelLoadError(entry.id, f"no backend for provider '{entry.provider}'")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            entry.id,
            f"the '{entry.provider}' backend cannot be imported on this machine ({exc})",
            missing_dependency=True,
        ) from exc
    backend_cls: type[Backend] = getattr(module, class_name)
    return backend_cls(entry, settings)
