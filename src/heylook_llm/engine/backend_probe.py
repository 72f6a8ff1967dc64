"""Which backend modules import on this machine (for /v1/capabilities), learned once per process without loading
any model."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass, field

from heylook_llm.backends import BACKENDS
from heylook_llm.backends.base import Backend


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
