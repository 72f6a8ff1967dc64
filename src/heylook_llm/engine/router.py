"""The router: keeps at most `max_loaded_models` loaded, loads on demand exactly once, evicts the least
recently used idle model, unloads models whose keep-alive ran out, and never unloads a model while a request
holds it.

Loaded weights are keyed by `ModelEntry.load_key()`, so aliases and variants of one model (same weights, other
sampling defaults or system prompt) share one loaded copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from heylook_llm.backends import create_backend
from heylook_llm.backends.base import Backend
from heylook_llm.config.durations import format_duration
from heylook_llm.config.paths import config_paths, without_local_paths
from heylook_llm.config.registry import ModelEntry, Registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.metrics import MetricsRecorder, ModelLoadState
from heylook_llm.engine.threads import ThreadHost
from heylook_llm.engine.worker import ModelWorker
from heylook_llm.errors import HeylookError, InvalidRequest, ModelLoadError, ModelNotFound, ServerBusy

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelEntry, ServerSettings], Backend]


class Lease:
    """A model held for one request: it is not unloaded until `release()` (synchronous and idempotent, so that
    it is safe in `finally` blocks of cancelled tasks)."""

    def __init__(self, router: ModelRouter, model: LoadedModel, entry: ModelEntry, load_seconds: float) -> None:
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
            self._router._release(self._model)

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
    in_flight: int = 0

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


class ModelRouter:
    def __init__(
        self,
        registry: Registry,
        settings: ServerSettings,
        backend_factory: BackendFactory = create_backend,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics if metrics is not None else MetricsRecorder()
        self.metrics.watch_router(self._load_states)
        self.settings = settings
        self._backend_factory = backend_factory
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # by load key, least recently used first
        self._loading: dict[str, float] = {}  # model id -> wall-clock time its load started
        self._load_lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._expiry_changed = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None
        self._threads = ThreadHost()
        """The workers' threads, reused from one load to the next (see engine/threads.py)."""
        self.loads = 0
        self.evictions = 0
        self.expirations = 0

    def entry(self, model_id: str) -> ModelEntry:
        entry = self.registry.get(model_id)
        if entry is None:
            raise ModelNotFound(model_id, [m.id for m in self.registry.enabled()])
        return entry

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def loading(self) -> dict[str, float]:
        """Models being loaded now: model id -> wall-clock time the load started."""
        return dict(self._loading)

    def _load_states(self) -> list[ModelLoadState]:
        states = [
            ModelLoadState(m.entry.id, True, max(0, m.worker.pending - m.worker.running), m.worker.running)
            for m in self._loaded.values()
        ]
        loaded_ids = {s.model_id for s in states}
        states += [ModelLoadState(e.id, False, 0, 0) for e in self.registry.enabled() if e.id not in loaded_ids]
        return states

    def loaded_model(self, model_id: str) -> LoadedModel | None:
        """The loaded weights serving `model_id`, if they are loaded."""
        return self._loaded.get(self.entry(model_id).load_key())

    def replace_registry(self, registry: Registry) -> None:
        """Serve a changed models.yaml; loaded weights no enabled entry uses any more unload once idle."""
        self.registry = registry
        keys = {e.load_key(): e for e in registry.enabled()}
        for model in self._loaded.values():
            current = registry.get(model.entry.id)
            if current is not None and current.load_key() == model.key:
                model.entry = current
            elif model.key in keys:
                model.entry = keys[model.key]
            else:
                model.keep_alive = 0.0
        self._expiry_changed.set()

    async def checkout(self, entry: ModelEntry, *, keep_alive: float | None = None, count: int = 1) -> Lease:
        """Hold the model loaded (loading it first if needed) until the lease is released.

        `keep_alive` (seconds, `math.inf` for ever) replaces the model's keep-alive; None means the server default.
        `count`: generations the caller will queue at once (ServerBusy unless all of them fit the queue now).
        """
        model_id = entry.id
        if keep_alive is None:
            keep_alive = self.settings.keep_alive_seconds
        if keep_alive < 0 or math.isnan(keep_alive):
            raise InvalidRequest("keep_alive must be 0 or more seconds (or infinite)", param="keep_alive")
        self._ensure_expiry_task()
        started = time.perf_counter()
        model = self._checkout(entry, keep_alive)
        if model is None:
            model = await self._load_and_checkout(entry, keep_alive)
        load_seconds = time.perf_counter() - started if model.loaded_at >= started else 0.0
        lease = Lease(self, model, entry, load_seconds)
        if model.worker.pending + count > self.settings.max_queued_requests_per_model:
            lease.release()
            raise ServerBusy(
                f"model '{model_id}' has {model.worker.pending} requests queued; try again shortly",
                retry_after_seconds=2,
            )
        return lease

    def fail_in_flight(self, exc: HeylookError) -> int:
        """End every queued and running generation of every loaded model with `exc`; returns how many."""
        return sum(model.worker.fail_all(exc) for model in self._loaded.values())

    def in_flight(self) -> int:
        """Requests holding a loaded model now (generating, queued or embedding)."""
        return sum(model.in_flight for model in self._loaded.values())

    @asynccontextmanager
    async def acquire(self, entry: ModelEntry, *, keep_alive: float | None = None) -> AsyncIterator[Lease]:
        lease = await self.checkout(entry, keep_alive=keep_alive)
        try:
            yield lease
        finally:
            lease.release()

    def _release(self, model: LoadedModel) -> None:
        model.in_flight -= 1
        model.last_used = time.monotonic()
        self._released.set()
        if model.in_flight == 0:
            self._expiry_changed.set()

    async def load(self, entry: ModelEntry, *, keep_alive: float | None = None) -> None:
        """Load a model without using it (start-up, preloading, Ollama's empty requests)."""
        async with self.acquire(entry, keep_alive=keep_alive):
            pass

    async def unload(self, model_id: str) -> bool:
        """Unload a model now if it is loaded and idle; True when it was unloaded."""
        key = self.entry(model_id).load_key()
        async with self._load_lock:
            model = self._loaded.get(key)
            if model is None or model.in_flight > 0:
                return False
            await self._unload(key)
            return True

    async def expire(self, model_id: str) -> bool:
        """Unload now if idle, else as soon as its requests finish (Ollama's keep_alive 0). False if not loaded."""
        model = self.loaded_model(model_id)
        if model is None:
            return False
        model.keep_alive = 0.0
        if model.in_flight == 0:
            await self.unload(model_id)
        else:
            self._ensure_expiry_task()
            self._expiry_changed.set()
        return True

    async def close(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        async with self._load_lock:
            for key in list(self._loaded):
                await self._unload(key)
        self._threads.close()

    def _checkout(self, entry: ModelEntry, keep_alive: float) -> LoadedModel | None:
        key = entry.load_key()
        model = self._loaded.get(key)
        if model is None:
            return None
        model.in_flight += 1
        model.last_used = time.monotonic()
        model.keep_alive = keep_alive
        model.entry = entry
        self._loaded.move_to_end(key)
        return model

    async def _load_and_checkout(self, entry: ModelEntry, keep_alive: float) -> LoadedModel:
        # One lock for all loads: many requests racing for the same model cause exactly one load, and
        # two different models never both count the same free slot.
        async with self._load_lock:
            model = self._checkout(entry, keep_alive)
            if model is not None:
                return model
            await self._make_room()
            self._loading[entry.id] = time.time()
            try:
                # Importing a backend (mlx-lm pulls in transformers) takes a second: keep it off the event loop.
                backend = await asyncio.to_thread(self._backend_factory, entry, self.settings)
                worker = ModelWorker(
                    backend, stream_interval=self.settings.stream_interval_seconds, threads=self._threads
                )
                log.info("loading model '%s' (%s)", entry.id, entry.provider)
                await worker.start()
            except ModelLoadError as exc:
                self.metrics.model_load_failed(entry.id)
                log.error("loading model '%s' failed: %s", entry.id, exc.reason)
                raise self.for_clients(exc, entry) from exc
            except Exception:
                self.metrics.model_load_failed(entry.id)
                raise
            finally:
                del self._loading[entry.id]
            self.loads += 1
            self.metrics.model_loaded(entry.id, worker.load_seconds)
            log.info("loaded model '%s' in %.2fs", entry.id, worker.load_seconds)
            key = entry.load_key()
            model = LoadedModel(
                key, entry, worker, loaded_at=time.perf_counter(), last_used=time.monotonic(), keep_alive=keep_alive
            )
            self._loaded[key] = model
            model.in_flight += 1
            return model

    def for_clients(self, exc: ModelLoadError, entry: ModelEntry) -> ModelLoadError:
        """The same error with its paths relative to the models folder (the log keeps them whole)."""
        folder = self.registry.source.parent if self.registry.source is not None else None
        reason = without_local_paths(exc.reason, folder, config_paths(entry.config))
        return ModelLoadError(exc.model_id, reason, missing_dependency=exc.missing_dependency)

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.registry.max_loaded_models:
            victim = next((key for key, m in self._loaded.items() if m.in_flight == 0), None)
            if victim is not None:
                self.metrics.model_evicted(self._loaded[victim].entry.id)
                await self._unload(victim)
                self.evictions += 1
                continue
            # Every loaded model is generating: wait for one to finish rather than unload it under a request.
            self._released.clear()
            await self._released.wait()

    async def _unload(self, key: str) -> None:
        # The pop happens before the first await: a checkout that runs meanwhile cannot find the model and
        # waits for the load lock instead of using weights that are going away.
        model = self._loaded.pop(key)
        log.info("unloading model '%s'", model.entry.id)
        await model.worker.stop()

    # --- keep-alive expiry ----------------------------------------------------------------------
    def _ensure_expiry_task(self) -> None:
        if self._expiry_task is None or self._expiry_task.done():
            self._expiry_task = asyncio.get_running_loop().create_task(
                self._unload_expired_forever(), name="model-keep-alive"
            )

    def _seconds_to_next_expiry(self) -> float | None:
        deadline = min((m.idle_deadline() for m in self._loaded.values()), default=math.inf)
        return None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())

    async def _unload_expired_forever(self) -> None:
        """Sleep until the next idle model's keep-alive runs out (or a release changes the picture); unload it."""
        while True:
            self._expiry_changed.clear()
            delay = self._seconds_to_next_expiry()
            if delay is None:
                await self._expiry_changed.wait()
            elif delay > 0:
                # asyncio.timeout rather than wait_for: on 3.11, wait_for can leave a cancelled task hanging.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._expiry_changed.wait()
            try:
                await self._unload_expired()
            except Exception:
                log.exception("unloading expired models failed")

    async def _unload_expired(self) -> None:
        async with self._load_lock:
            for key, model in list(self._loaded.items()):
                # Re-checked for each model: the previous unload awaited, and requests may have arrived.
                if self._loaded.get(key) is model and model.idle_deadline() <= time.monotonic():
                    log.info(
                        "model '%s' was idle for its keep-alive (%s): unloading",
                        model.entry.id,
                        format_duration(model.keep_alive),
                    )
                    self.expirations += 1
                    self.metrics.model_expired(model.entry.id)
                    await self._unload(key)
