"""The router: keeps at most `max_loaded_models` loaded and their memory within the budget, loads on demand
exactly once, evicts the least recently used idle model (never a pinned one, nor one younger than
`min_residency`), unloads models whose keep-alive ran out, and never unloads a model while a request holds it.

Before a load, the model's footprint is estimated (engine/memory.py); a model that cannot fit the budget even with
every evictable model gone is refused (InsufficientMemory) before anything is unloaded or loaded. After the load the
measured resident growth replaces the estimate.

Loaded weights are keyed by `ModelEntry.load_key()` less llama.cpp's `n_ctx`, so aliases and variants of one model
(same weights, other sampling defaults or system prompt) share one loaded copy, and a request asking for a larger
context (`num_ctx`) reloads that copy with it.
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

from heylook_llm.backends import create_backend
from heylook_llm.backends.base import Backend
from heylook_llm.config.durations import format_duration
from heylook_llm.config.paths import config_paths, without_local_paths
from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, ModelEntry, Registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.leases import Lease, LoadedModel, context_of, fits_context, weights_key, with_loaded_context
from heylook_llm.engine.memory import (
    NO_FOOTPRINT,
    Footprint,
    estimate_footprint,
    format_bytes,
    machine_memory,
    never_fits,
    resident_bytes,
    resolve_budget,
)
from heylook_llm.engine.metrics import MetricsRecorder, ModelLoadState
from heylook_llm.engine.tasks import cancel_and_wait
from heylook_llm.engine.threads import ThreadHost
from heylook_llm.engine.worker import ModelWorker
from heylook_llm.errors import (
    HeylookError,
    InsufficientMemory,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ServerBusy,
)
from heylook_llm.model_info import ModelFileError, ModelInfoReader

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelEntry, ServerSettings], Backend]

ROOM_WAIT_SECONDS = 120.0
"""How long a load waits for busy (or too recently loaded) models to make room before answering 503."""


class ModelRouter:
    def __init__(
        self,
        registry: Registry,
        settings: ServerSettings,
        backend_factory: BackendFactory | None = None,
        metrics: MetricsRecorder | None = None,
        model_info: ModelInfoReader | None = None,
    ) -> None:
        self.registry = registry
        self._files = model_info if model_info is not None else ModelInfoReader()
        total, available = machine_memory()
        self.budget_bytes = resolve_budget(registry, total, available)
        """Bytes the loaded models may take together (models.yaml's memory_budget, else a share of what was free)."""
        self.metrics = metrics if metrics is not None else MetricsRecorder()
        self.metrics.watch_router(self._load_states, lambda: self.budget_bytes)
        self.settings = settings
        self._backend_factory = backend_factory or create_backend
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # by load key, least recently used first
        self._loading: dict[str, float] = {}  # model id -> wall-clock time its load started
        self._loading_backends: dict[str, Backend] = {}  # model id -> the backend loading now (its progress)
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

    def load_progress(self, model_id: str) -> float | None:
        """The share of the weights read while `model_id` loads; None when not loading or not reported."""
        backend = self._loading_backends.get(model_id)
        return backend.facts.load_fraction if backend is not None else None

    def _load_states(self) -> list[ModelLoadState]:
        states = [
            ModelLoadState(
                m.entry.id,
                True,
                max(0, m.worker.pending - m.worker.running),
                m.worker.running,
                memory_bytes=m.footprint.total_bytes,
                estimated_bytes=m.footprint.estimate_bytes,
                pinned=m.pinned,
            )
            for m in self._loaded.values()
        ]
        loaded_ids = {s.model_id for s in states}
        states += [ModelLoadState(e.id, False, 0, 0) for e in self.registry.enabled() if e.id not in loaded_ids]
        return states

    def loaded_model(self, model_id: str) -> LoadedModel | None:
        """The loaded weights serving `model_id`, if they are loaded."""
        return self._loaded.get(weights_key(self.entry(model_id)))

    def used_bytes(self) -> int:
        """Memory the loaded models are counted as (measured where measured)."""
        return sum(m.footprint.total_bytes for m in self._loaded.values())

    async def estimate(self, entry: ModelEntry) -> Footprint:
        """The memory `entry` will take once loaded (the measured figure when these weights are loaded with the
        same context). An unreadable file estimates as nothing: the load then fails with the file's reason."""
        model = self._loaded.get(weights_key(entry))
        if model is not None and model.context == context_of(entry):
            return model.footprint
        if not isinstance(entry.config, LlamaCppConfig | MLXConfig):
            return NO_FOOTPRINT
        try:
            info = await asyncio.to_thread(self._files.info, entry.config.model_path)
        except (ModelFileError, OSError) as exc:
            log.info("no memory estimate for model '%s': %s", entry.id, exc)
            return NO_FOOTPRINT
        return estimate_footprint(entry, info)

    def replace_registry(self, registry: Registry) -> None:
        """Serve a changed models.yaml; loaded weights no enabled entry uses any more unload once idle."""
        self.registry = registry
        total, available = machine_memory()
        self.budget_bytes = resolve_budget(registry, total, available + self.used_bytes())
        keys = {weights_key(e): e for e in registry.enabled()}
        for model in self._loaded.values():
            current = registry.get(model.entry.id)
            if current is not None and weights_key(current) == model.key:
                model.entry = with_loaded_context(current, model)
            elif model.key in keys:
                model.entry = with_loaded_context(keys[model.key], model)
            else:
                model.keep_alive = 0.0
            was_pinned, model.pinned = model.pinned, self._pin_of(model.key)
            if was_pinned and not model.pinned and math.isinf(model.keep_alive):
                model.keep_alive = self._keep_alive_for(model.entry, None)  # the pin's "for ever" ends with it
        self._expiry_changed.set()

    @property
    def registry(self) -> Registry:
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self._registry = registry
        self._pinned_keys = frozenset(weights_key(e) for e in registry.enabled() if e.pin)

    def _pin_of(self, key: str) -> bool:
        """Whether the weights `key` are pinned: by any enabled entry sharing them (aliases, variants)."""
        return key in self._pinned_keys

    def _keep_alive_for(self, entry: ModelEntry, requested: float | None) -> float:
        """Pinned: for ever. Else the request's keep-alive, the model's default, the server's default."""
        if self._pin_of(weights_key(entry)):
            return math.inf
        if requested is not None:
            return requested
        return entry.keep_alive if entry.keep_alive is not None else self.settings.keep_alive_seconds

    async def checkout(self, entry: ModelEntry, *, keep_alive: float | None = None, count: int = 1) -> Lease:
        """Hold the model loaded (loading it first if needed) until the lease is released.

        `keep_alive` (seconds, `math.inf` for ever) replaces the model's keep-alive; None means the server default.
        `count`: generations the caller will queue at once (ServerBusy unless all of them fit the queue now).
        """
        model_id = entry.id
        if keep_alive is not None and (keep_alive < 0 or math.isnan(keep_alive)):
            raise InvalidRequest("keep_alive must be 0 or more seconds (or infinite)", param="keep_alive")
        keep_alive = self._keep_alive_for(entry, keep_alive)
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

    def release_model(self, model: LoadedModel) -> None:
        """A lease on `model` ended."""
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
        """Unload a model now if it is loaded and idle (pinned or not); True when it was unloaded."""
        key = weights_key(self.entry(model_id))
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
        await cancel_and_wait(self._expiry_task)
        self._expiry_task = None
        async with self._load_lock:
            for key in list(self._loaded):
                await self._unload(key)
        self._threads.close()

    def _checkout(self, entry: ModelEntry, keep_alive: float) -> LoadedModel | None:
        key = weights_key(entry)
        model = self._loaded.get(key)
        if model is None or not fits_context(model, entry):
            return None
        model.in_flight += 1
        model.last_used = time.monotonic()
        model.keep_alive = keep_alive
        model.entry = with_loaded_context(entry, model)
        self._loaded.move_to_end(key)
        return model

    async def _load_and_checkout(self, entry: ModelEntry, keep_alive: float) -> LoadedModel:
        # One lock for all loads: many requests racing for the same model cause exactly one load, and
        # two different models never both count the same free slot.
        async with self._load_lock:
            model = self._checkout(entry, keep_alive)
            if model is not None:
                return model
            key = weights_key(entry)
            footprint = await self.estimate(entry)
            # Refused before anything is unloaded: a context too large for the budget leaves the loaded copy alone.
            self._refuse_if_never_fits(entry, footprint, replacing=key)
            smaller = self._loaded.get(key)
            if smaller is not None:
                # Loaded with a smaller context than this request asks for: reload with the larger one.
                await self._wait_idle(smaller, entry)
                log.info(
                    "reloading model '%s' with a context of %s tokens (was %s)",
                    entry.id,
                    context_of(entry),
                    smaller.context,
                )
                await self._unload(key)
            await self._make_room(entry, footprint)
            self._loading[entry.id] = time.time()
            try:
                # Importing a backend (mlx-lm pulls in transformers) takes a second: keep it off the event loop.
                backend = await asyncio.to_thread(self._backend_factory, entry, self.settings)
                self._loading_backends[entry.id] = backend
                worker = ModelWorker(
                    backend, stream_interval=self.settings.stream_interval_seconds, threads=self._threads
                )
                log.info(
                    "loading model '%s' (%s), estimated %s of a %s budget (%s in use)",
                    entry.id,
                    entry.provider,
                    format_bytes(footprint.estimate_bytes),
                    format_bytes(self.budget_bytes),
                    format_bytes(self.used_bytes()),
                )
                resident_before = resident_bytes()
                await worker.start()
                footprint = footprint.with_measured(resident_bytes() - resident_before, backend.facts.accelerator_bytes)
            except ModelLoadError as exc:
                self.metrics.model_load_failed(entry.id)
                log.error("loading model '%s' failed: %s", entry.id, exc.reason)
                raise self.for_clients(exc, entry) from exc
            except Exception:
                self.metrics.model_load_failed(entry.id)
                raise
            finally:
                del self._loading[entry.id]
                self._loading_backends.pop(entry.id, None)
            self.loads += 1
            self.metrics.model_loaded(entry.id, worker.load_seconds)
            log.info(
                "loaded model '%s' in %.2fs: %s resident (estimated %s)",
                entry.id,
                worker.load_seconds,
                format_bytes(footprint.measured_bytes or 0),
                format_bytes(footprint.estimate_bytes),
            )
            now = time.monotonic()
            model = LoadedModel(
                key,
                entry,
                worker,
                loaded_at=time.perf_counter(),
                last_used=now,
                keep_alive=keep_alive,
                footprint=footprint,
                loaded_mono=now,
                pinned=self._pin_of(key),
            )
            self._loaded[key] = model
            model.in_flight += 1
            return model

    def for_clients(self, exc: ModelLoadError, entry: ModelEntry) -> ModelLoadError:
        """The same error with its paths relative to the models folder (the log keeps them whole)."""
        folder = self.registry.source.parent if self.registry.source is not None else None
        reason = without_local_paths(exc.reason, folder, config_paths(entry.config))
        return ModelLoadError(exc.model_id, reason, missing_dependency=exc.missing_dependency)

    def _refuse_if_never_fits(self, entry: ModelEntry, footprint: Footprint, replacing: str | None = None) -> None:
        """InsufficientMemory when `entry` could not fit even once every unpinned model is gone (`replacing`: the
        loaded copy it would replace, which does not count)."""
        pinned = [
            (m.entry.id, m.footprint.total_bytes) for key, m in self._loaded.items() if m.pinned and key != replacing
        ]
        problem = never_fits(entry.id, footprint, self.budget_bytes, pinned, self.registry.max_loaded_models)
        if problem is not None:
            raise InsufficientMemory(problem, param="model")

    def _needs_room(self, need: int) -> bool:
        return len(self._loaded) >= self.registry.max_loaded_models or self.used_bytes() + need > self.budget_bytes

    async def _make_room(self, entry: ModelEntry, footprint: Footprint) -> None:
        """Evict least recently used idle models until `entry` fits the count and the budget; wait (bounded) for
        busy or recently loaded ones."""
        self._refuse_if_never_fits(entry, footprint)
        need = footprint.estimate_bytes
        deadline = time.monotonic() + ROOM_WAIT_SECONDS
        while self._needs_room(need):
            now = time.monotonic()
            residency = self.registry.min_residency
            victim = next(
                (
                    key
                    for key, m in self._loaded.items()
                    if m.in_flight == 0 and not m.pinned and now >= m.loaded_mono + residency
                ),
                None,
            )
            if victim is not None:
                gone = self._loaded[victim]
                log.info(
                    "evicting model '%s' (%s) to make room for '%s' (%s)",
                    gone.entry.id,
                    format_bytes(gone.footprint.total_bytes),
                    entry.id,
                    format_bytes(need),
                )
                self.metrics.model_evicted(gone.entry.id)
                await self._unload(victim)
                self.evictions += 1
                continue
            if now >= deadline:
                raise ServerBusy(
                    f"model '{entry.id}' is waiting for room: the loaded models stayed busy or within their "
                    f"minimum residency for {ROOM_WAIT_SECONDS:g}s; try again shortly",
                    retry_after_seconds=5,
                )
            # Every candidate is generating or was loaded too recently (the swap guard): wait for a release or for
            # the earliest residency to end rather than unload a model under a request.
            young = [
                m.loaded_mono + residency - now
                for m in self._loaded.values()
                if m.in_flight == 0 and not m.pinned and now < m.loaded_mono + residency
            ]
            wait = min([deadline - now, *young])
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wait)):
                    await self._released.wait()

    async def _wait_idle(self, model: LoadedModel, entry: ModelEntry) -> None:
        """Wait (bounded) until no request holds `model`, to reload it with a larger context."""
        deadline = time.monotonic() + ROOM_WAIT_SECONDS
        while model.in_flight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerBusy(
                    f"model '{entry.id}' must reload with a context of {context_of(entry)} tokens but stayed busy "
                    f"for {ROOM_WAIT_SECONDS:g}s; try again shortly",
                    retry_after_seconds=5,
                )
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
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
        deadline = min((m.idle_deadline() for m in self._loaded.values() if m.expires), default=math.inf)
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
                if self._loaded.get(key) is model and model.expires and model.idle_deadline() <= time.monotonic():
                    log.info(
                        "model '%s' was idle for its keep-alive (%s): unloading",
                        model.entry.id,
                        format_duration(model.keep_alive),
                    )
                    self.expirations += 1
                    self.metrics.model_expired(model.entry.id)
                    await self._unload(key)
