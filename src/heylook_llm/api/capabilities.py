"""What this server offers now, for /v1/capabilities: read from the settings, the registry, the backends and the
running process, never from a static list.

Model features are asked of the backends themselves: each request feature is offered to the backend's
`check_request` (the same check every real request passes), on the loaded backend when the model is loaded and
on an unloaded instance otherwise. Backend modules are imported once per process, in a thread, to learn whether
they import; no model is loaded for this.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

from heylook_llm import __version__
from heylook_llm.backends import BACKENDS, backend_key
from heylook_llm.backends.base import Backend
from heylook_llm.config.registry import LlamaCppConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.batch import ProcessingMode
from heylook_llm.engine.router import ModelRouter
from heylook_llm.errors import HeylookError
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams

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


@dataclass(slots=True)
class BackendImport:
    importable: bool
    error: str | None = None
    backend_class: type[Backend] | None = None


@dataclass(slots=True)
class BackendProbe:
    """Imports each backend module at most once per process (kept on app.state, not in a module global)."""

    results: dict[str, BackendImport] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def imports(self) -> dict[str, BackendImport]:
        async with self.lock:
            if not self.results:
                self.results = await asyncio.to_thread(_import_backends)
        return self.results


def _import_backends() -> dict[str, BackendImport]:
    results: dict[str, BackendImport] = {}
    for key, target in BACKENDS.items():
        module_name, class_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or a native library failing to initialise
            results[key] = BackendImport(False, f"{type(exc).__name__}: {exc}")
            continue
        results[key] = BackendImport(True, None, getattr(module, class_name))
    return results


def _accepts(backend: Backend, request: GenerationRequest) -> bool | None:
    try:
        backend.check_request(request)
    except HeylookError:
        return False
    except Exception:
        log.debug("probing %s failed", backend.entry.id, exc_info=True)
        return None
    return True


def _features(entry: ModelEntry, backend: Backend | None, loaded: bool) -> dict[str, bool | None]:
    embedding = "embedding" in entry.capabilities
    features: dict[str, bool | None] = {
        "chat": None,
        "constrained_output": None,
        "fill_in_middle": None,
        "embedding": embedding,
        "vision": "vision" in entry.capabilities,
    }
    if backend is None:
        return features
    sampling = SamplingParams(max_tokens=1)
    chat = GenerationRequest(entry.id, sampling, messages=[ChatMessage("user", "probe")])
    features["chat"] = _accepts(backend, chat)
    features["constrained_output"] = features["chat"] and _accepts(
        backend, GenerationRequest(entry.id, sampling, messages=[ChatMessage("user", "probe")], response_format="json")
    )
    # Fill-in-the-middle depends on tokens found at load time: only a loaded model can answer.
    if loaded:
        fim = GenerationRequest(entry.id, sampling, prompt="def f(", suffix="\n")
        features["fill_in_middle"] = _accepts(backend, fim)
    return features


def _context_length(entry: ModelEntry, backend: Backend | None, loaded: bool) -> int | None:
    if loaded and backend is not None and backend.facts.context_length:
        return backend.facts.context_length
    if isinstance(entry.config, LlamaCppConfig):
        return entry.config.n_ctx
    return None


def _model(
    entry: ModelEntry, router: ModelRouter, settings: ServerSettings, imports: dict[str, BackendImport]
) -> dict[str, Any]:
    key = backend_key(entry)
    loaded_model = router.loaded_model(entry.id)
    backend: Backend | None = loaded_model.worker.backend if loaded_model is not None else None
    found = imports.get(key)
    if backend is None and found is not None and found.backend_class is not None:
        try:
            backend = found.backend_class(entry, settings)
        except Exception:
            log.debug("could not make an unloaded %s backend for %s", key, entry.id, exc_info=True)
    loaded = loaded_model is not None
    return {
        "id": entry.id,
        "provider": entry.provider,
        "backend": key,
        "backend_importable": bool(found and found.importable),
        "loaded": loaded,
        "context_length": _context_length(entry, backend, loaded),
        "max_parallel": backend.max_parallel if loaded and backend is not None else None,
        "features": _features(entry, backend, loaded),
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


async def capabilities(
    router: ModelRouter, settings: ServerSettings, probe: BackendProbe, images: Any, max_choices: int
) -> dict[str, Any]:
    imports = await probe.imports()
    backends = {
        key: {
            "importable": result.importable,
            "error": result.error,
            "packages": {d: _version(d) for d in BACKEND_DISTRIBUTIONS.get(key, ())},
        }
        for key, result in imports.items()
    }
    registry = router.registry
    return {
        "object": "capabilities",
        "version": __version__,
        "apis": {"openai": settings.api.serves_openai, "ollama": settings.api.serves_ollama},
        "backends": backends,
        "models": [_model(e, router, settings, imports) for e in registry.enabled()],
        "max_loaded_models": registry.max_loaded_models,
        "limits": _limits(settings, max_choices),
        "speedups": _speedups(images),
        "batch_processing_modes": [m.value for m in ProcessingMode] if settings.api.serves_openai else [],
    }
