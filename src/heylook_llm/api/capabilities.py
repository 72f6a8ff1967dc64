"""What this server offers now, for /v1/capabilities: read from the settings, the registry, the backends and the
running process, never from a static list.

Model features come from the engine: what the loaded backend declares, or what an unloaded model is expected
to declare (engine/features.py), the same sets the request check uses. Backend modules are imported once per
process, in a thread, to learn whether they import; no model is loaded for this.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import logging
from typing import Any

from heylook_llm import __version__
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.backend_probe import BackendImport
from heylook_llm.engine.batch import ProcessingMode
from heylook_llm.engine.service import Engine
from heylook_llm.types import Feature

log = logging.getLogger(__name__)

BACKEND_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "llama_cpp": ("llama-cpp-python",),
    "mlx": ("mlx", "mlx-lm"),
    "mlx:vision": ("mlx", "mlx-vlm"),
}
"""The installed packages whose versions matter for each backend."""

OPTIONAL_SPEEDUPS: dict[str, str] = {
    "uvloop": "uvloop",
    "httptools": "httptools",
    "turbojpeg": "PyTurboJPEG",
}
"""Import name -> distribution of optional packages that make the server faster when installed."""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _features(engine: Engine, entry: ModelEntry, loaded: bool) -> dict[str, bool | None]:
    features = engine.features(entry)
    return {
        "chat": Feature.CHAT in features,
        "constrained_output": Feature.RESPONSE_FORMAT in features,
        # Fill-in-the-middle depends on tokens found at load time: only a loaded model can answer.
        "fill_in_middle": (Feature.FILL_IN_MIDDLE in features) if loaded else None,
        "embedding": Feature.EMBEDDING in features,
        "rerank": Feature.RERANK in features,
        "vision": Feature.IMAGES in features,
    }


def _model(engine: Engine, entry: ModelEntry, imports: dict[str, BackendImport]) -> dict[str, Any]:
    key = engine.backend_name(entry)
    status = engine.loaded_status(entry)
    found = imports.get(key)
    context = status.facts.context_length if status is not None and status.facts.context_length else None
    return {
        "id": entry.id,
        "provider": entry.provider,
        "backend": key,
        "backend_importable": bool(found and found.importable),
        "loaded": status is not None,
        "context_length": context or entry.config.context_size(),
        "max_parallel": status.max_parallel if status is not None else None,
        "features": _features(engine, entry, status is not None),
    }


def _speedups(images: Any) -> dict[str, Any]:
    try:
        loop_module = type(asyncio.get_running_loop()).__module__
    except RuntimeError:
        loop_module = ""
    out: dict[str, Any] = {"orjson": {"installed": True, "version": _version("orjson"), "used": True}}
    for name, distribution in OPTIONAL_SPEEDUPS.items():
        installed = importlib.util.find_spec(name) is not None
        out[name] = {"installed": installed, "version": _version(distribution) if installed else None}
    out["uvloop"]["used"] = loop_module.startswith("uvloop")
    # uvicorn's http="auto" picks httptools whenever it imports; the server is started that way (cli.py).
    out["httptools"]["used"] = out["httptools"]["installed"]
    out["turbojpeg"]["used"] = bool(getattr(images, "turbojpeg", False))
    return out


def _limits(settings: ServerSettings, max_choices: int) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "max_queued_requests_per_model": settings.max_queued_requests_per_model,
        "max_choices_per_request": max_choices,
        "max_tokens": "prompt tokens + max_tokens must fit the model's context_length",
    }
    images = getattr(settings, "images", None)
    if images is not None:
        limits["images"] = {
            "max_images_per_request": images.max_images_per_request,
            "max_image_bytes": images.max_image_bytes,
            "max_image_pixels": images.max_image_pixels,
        }
    return limits


async def capabilities(engine: Engine, images: Any, max_choices: int) -> dict[str, Any]:
    imports = await engine.backend_imports()
    backends = {
        key: {
            "importable": result.importable,
            "error": result.error,
            "packages": {d: _version(d) for d in BACKEND_DISTRIBUTIONS.get(key, ())},
        }
        for key, result in imports.items()
    }
    settings = engine.settings
    return {
        "object": "capabilities",
        "version": __version__,
        "apis": {"openai": settings.api.serves_openai, "ollama": settings.api.serves_ollama},
        "backends": backends,
        "models": [_model(engine, e, imports) for e in engine.models()],
        "max_loaded_models": engine.registry.max_loaded_models,
        "limits": _limits(settings, max_choices),
        "speedups": _speedups(images),
        "batch_processing_modes": [m.value for m in ProcessingMode] if settings.api.serves_openai else [],
    }
