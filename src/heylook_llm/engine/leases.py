"""What the router hands out and keeps: a loaded model's record (`LoadedModel`), the `Lease` a request holds
on it, and the keys deciding which entries share one loaded copy of their weights."""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from heylook_llm.config.registry import SAMPLING_CONFIG_FIELDS, LlamaCppConfig, ModelEntry
from heylook_llm.engine.memory import NO_FOOTPRINT, Footprint
from heylook_llm.engine.metrics import MetricsRecorder
from heylook_llm.engine.worker import ModelWorker


class LeaseOwner(Protocol):
    """The router, as a lease sees it."""

    metrics: MetricsRecorder

    def release_model(self, model: LoadedModel) -> None: ...


_KEYS_REMEMBERED = 512
_keys: OrderedDict[int, tuple[ModelEntry, str]] = OrderedDict()
"""weights_key's recent answers by entry identity. Each holds its entry, so that an id is not reused while it is
remembered; entries are not changed once parsed (an edit replaces the registry), so an answer stays right."""


def weights_key(entry: ModelEntry) -> str:
    """What one loaded copy is shared by: `load_key()` without llama.cpp's n_ctx, which a request may raise.

    Asked several times per request; dumping the config each time was a tenth of the event loop's time per request
    on a small model, so answers are remembered per entry object."""
    known = _keys.get(id(entry))
    if known is not None and known[0] is entry:
        return known[1]
    cfg = entry.config
    if not isinstance(cfg, LlamaCppConfig):
        key = entry.load_key()
    else:
        fields = cfg.model_dump(mode="json", exclude={*SAMPLING_CONFIG_FIELDS, "n_ctx"})
        key = json.dumps({"provider": entry.provider, **fields}, sort_keys=True)
    _keys[id(entry)] = (entry, key)
    if len(_keys) > _KEYS_REMEMBERED:
        _keys.popitem(last=False)
    return key


def context_of(entry: ModelEntry) -> int | None:
    """The context window the entry loads with (llama.cpp's n_ctx); None where the model's own is used."""
    return entry.config.n_ctx if isinstance(entry.config, LlamaCppConfig) else None


class Lease:
    """A model held for one request: it is not unloaded until `release()` (synchronous and idempotent, so that
    it is safe in `finally` blocks of cancelled tasks)."""

    def __init__(self, router: LeaseOwner, model: LoadedModel, entry: ModelEntry, load_seconds: float) -> None:
        self._router = router
        self._model = model
        self.entry = entry
        """The entry the request named (an alias or variant shares the weights of another entry)."""
        self.worker = model.worker
        self.load_seconds = load_seconds
        """Time this request spent waiting for the model to load (0 when it was already loaded)."""
        self.metrics = router.metrics
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._router.release_model(self._model)

    def share(self) -> Lease:
        """Another hold on the same weights, released on its own (one per generation of a multi-part request)."""
        self._model.in_flight += 1
        self._model.last_used = time.monotonic()
        return Lease(self._router, self._model, self.entry, self.load_seconds)


@dataclass(slots=True)
class LoadedModel:
    key: str
    entry: ModelEntry
    """The entry most recently served by these weights."""
    worker: ModelWorker
    loaded_at: float
    last_used: float
    """`time.monotonic()` of the last checkout or release."""
    keep_alive: float
    """Seconds to stay loaded once idle, set by the latest request; `math.inf` never expires, 0 unloads at once."""
    footprint: Footprint = NO_FOOTPRINT
    """The estimate before load, with the measured resident growth after."""
    loaded_mono: float = 0.0
    """`time.monotonic()` when the load finished (the swap guard counts `min_residency` from it)."""
    pinned: bool = False
    """An enabled entry sharing these weights says `pin: true` (kept current by the router)."""
    in_flight: int = 0

    @property
    def expires(self) -> bool:
        """Unloaded when its keep-alive runs out: unpinned, or pinned and told to go (an explicit keep_alive 0)."""
        return not self.pinned or self.keep_alive == 0

    @property
    def context(self) -> int | None:
        return context_of(self.entry)

    def idle_deadline(self) -> float:
        """Monotonic time at which an idle model expires (`math.inf` while requests hold it or it never expires)."""
        if self.in_flight > 0:
            return math.inf
        return self.last_used + self.keep_alive

    def expires_at(self) -> float | None:
        """Wall-clock expiry for display (Ollama's /api/ps); a busy model counts from now. None: never."""
        if math.isinf(self.keep_alive):
            return None
        now = time.monotonic()
        start = now if self.in_flight > 0 else self.last_used
        return time.time() + (start + self.keep_alive - now)


def fits_context(model: LoadedModel, entry: ModelEntry) -> bool:
    """The loaded copy's context holds what `entry` asks for (a larger loaded context serves a smaller request)."""
    wanted, loaded = context_of(entry), model.context
    return wanted is None or loaded is None or wanted <= loaded


def with_loaded_context(entry: ModelEntry, model: LoadedModel) -> ModelEntry:
    """`entry` as the loaded copy runs it: a context raised by a request stays until the model unloads."""
    loaded, wanted = model.context, context_of(entry)
    if loaded is None or wanted is None or wanted >= loaded:
        return entry
    assert isinstance(entry.config, LlamaCppConfig)
    return entry.model_copy(update={"config": entry.config.model_copy(update={"n_ctx": loaded})})
