"""The router: keeps at most `max_loaded_models` loaded, loads on demand exactly once, evicts the least
recently used idle model, and never unloads a model while a request holds it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from heylook_llm.backends import create_backend
from heylook_llm.backends.base import Backend
from heylook_llm.config.registry import ModelEntry, Registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.worker import GenerationStream, ModelWorker
from heylook_llm.errors import ModelNotFound, ServerBusy
from heylook_llm.types import GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelEntry, ServerSettings], Backend]


class Lease:
    """A model held for one request: it is not unloaded until `release()` (synchronous and idempotent, so that
    it is safe in `finally` blocks of cancelled tasks)."""

    def __init__(self, router: ModelRouter, model: LoadedModel, load_seconds: float) -> None:
        self._router = router
        self._model = model
        self.entry = model.entry
        self.worker = model.worker
        self.load_seconds = load_seconds
        """Time this request spent waiting for the model to load (0 when it was already loaded)."""
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._router._release(self._model)


@dataclass(slots=True)
class LoadedModel:
    entry: ModelEntry
    worker: ModelWorker
    loaded_at: float
    last_used: float
    in_flight: int = 0


class ModelRouter:
    def __init__(
        self, registry: Registry, settings: ServerSettings, backend_factory: BackendFactory = create_backend
    ) -> None:
        self.registry = registry
        self.settings = settings
        self._backend_factory = backend_factory
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._load_lock = asyncio.Lock()
        self._released = asyncio.Event()
        self.loads = 0
        self.evictions = 0

    def entry(self, model_id: str) -> ModelEntry:
        entry = self.registry.get(model_id)
        if entry is None:
            raise ModelNotFound(model_id, [m.id for m in self.registry.enabled()])
        return entry

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    async def checkout(self, model_id: str) -> Lease:
        """Hold `model_id` loaded (loading it first if needed) until the lease is released."""
        entry = self.entry(model_id)
        started = time.perf_counter()
        model = self._checkout(model_id)
        if model is None:
            model = await self._load_and_checkout(entry)
        lease = Lease(self, model, time.perf_counter() - started if model.loaded_at >= started else 0.0)
        if model.worker.pending >= self.settings.max_queued_requests_per_model:
            lease.release()
            raise ServerBusy(
                f"model '{model_id}' has {model.worker.pending} requests queued; try again shortly",
                retry_after_seconds=2,
            )
        return lease

    @asynccontextmanager
    async def acquire(self, model_id: str) -> AsyncIterator[Lease]:
        lease = await self.checkout(model_id)
        try:
            yield lease
        finally:
            lease.release()

    def _release(self, model: LoadedModel) -> None:
        model.in_flight -= 1
        model.last_used = time.monotonic()
        self._released.set()

    async def load(self, model_id: str) -> None:
        """Load a model without using it (start-up, preloading)."""
        async with self.acquire(model_id):
            pass

    async def unload(self, model_id: str) -> bool:
        """Unload a model now if it is loaded and idle; True when it was unloaded."""
        async with self._load_lock:
            model = self._loaded.get(model_id)
            if model is None or model.in_flight > 0:
                return False
            await self._unload(model_id)
            return True

    async def close(self) -> None:
        async with self._load_lock:
            for model_id in list(self._loaded):
                await self._unload(model_id)

    def _checkout(self, model_id: str) -> LoadedModel | None:
        model = self._loaded.get(model_id)
        if model is None:
            return None
        model.in_flight += 1
        model.last_used = time.monotonic()
        self._loaded.move_to_end(model_id)
        return model

    async def _load_and_checkout(self, entry: ModelEntry) -> LoadedModel:
        # One lock for all loads: many requests racing for the same model cause exactly one load, and
        # two different models never both count the same free slot.
        async with self._load_lock:
            model = self._checkout(entry.id)
            if model is not None:
                return model
            await self._make_room()
            backend = self._backend_factory(entry, self.settings)
            worker = ModelWorker(backend)
            log.info("loading model '%s' (%s)", entry.id, entry.provider)
            await worker.start()
            self.loads += 1
            log.info("loaded model '%s' in %.2fs", entry.id, worker.load_seconds)
            now = time.monotonic()
            model = LoadedModel(entry, worker, loaded_at=time.perf_counter(), last_used=now)
            self._loaded[entry.id] = model
            model.in_flight += 1
            return model

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.registry.max_loaded_models:
            victim = next((mid for mid, m in self._loaded.items() if m.in_flight == 0), None)
            if victim is not None:
                await self._unload(victim)
                self.evictions += 1
                continue
            # Every loaded model is generating: wait for one to finish rather than unload it under a request.
            self._released.clear()
            await self._released.wait()

    async def _unload(self, model_id: str) -> None:
        model = self._loaded.pop(model_id)
        log.info("unloading model '%s'", model_id)
        await model.worker.stop()


class ActiveGeneration:
    """A generation that has started: the model is held until `close()`, which also cancels the worker side.

    `close()` is synchronous so that it runs to the end in the `finally` of a task being cancelled.
    """

    def __init__(self, lease: Lease, stream: GenerationStream, first: GenerationChunk) -> None:
        self.lease = lease
        self._stream = stream
        self.first = first

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        chunk = self.first
        while True:
            if chunk.stats is not None:
                chunk.stats.load_seconds = self.lease.load_seconds
            yield chunk
            if chunk.finish_reason is not None:
                return
            chunk = await anext(self._stream)

    def close(self) -> None:
        self._stream.cancel()
        self.lease.release()


async def start_generation(router: ModelRouter, request: GenerationRequest) -> ActiveGeneration:
    """Acquire the model, queue the request and wait until the prompt is accepted (errors surface here)."""
    lease = await router.checkout(request.model_id)
    stream: GenerationStream | None = None
    try:
        stream = lease.worker.submit(request)
        first = await anext(stream)
    except BaseException:
        if stream is not None:
            stream.cancel()
        lease.release()
        raise
    return ActiveGeneration(lease, stream, first)
