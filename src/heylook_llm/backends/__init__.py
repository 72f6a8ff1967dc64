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


def backend_key(entry: ModelEntry) -> str:
    """The table key for an entry: MLX models with `vision: true` load through mlx-vlm, not mlx-lm."""
    if isinstance(entry.config, MLXConfig) and entry.config.vision:
        return f"{entry.provider}:vision"
    return entry.provider


def create_backend(entry: ModelEntry, settings: ServerSettings) -> Backend:
    target = BACKENDS.get(backend_key(entry))
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
