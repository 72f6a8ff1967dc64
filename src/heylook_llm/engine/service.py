"""The engine façade: the one object the API dialects talk to.

It resolves a model name once, starts generations, embeds, loads and unloads, describes models (their file facts,
what they can do, what is loaded) and edits the model catalogue (models.yaml). Routers, leases, workers and
backends stay behind it: nothing in `api/` touches them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from heylook_llm.backends import backend_key
from heylook_llm.backends.base import ModelFacts
from heylook_llm.backends.chat_template import check_chat_template
from heylook_llm.config.registry import UPSTREAM_PROVIDERS, LlamaCppConfig, ModelEntry, Registry, UpstreamConfig
from heylook_llm.config.registry_store import RegistryStore
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.admission import start_generations
from heylook_llm.engine.backend_probe import BackendImport, BackendProbe
from heylook_llm.engine.dashboard_view import DashboardView
from heylook_llm.engine.fanout import StartGeneration
from heylook_llm.engine.features import expected_features, shown_features
from heylook_llm.engine.generation import ActiveGeneration, prepared, start_generation, with_entry_defaults
from heylook_llm.engine.lifecycle import Lifecycle
from heylook_llm.engine.memory import NO_FOOTPRINT, Footprint
from heylook_llm.engine.metrics import MetricsRecorder
from heylook_llm.engine.router import BackendFactory, ModelRouter
from heylook_llm.engine.upstream.service import Upstreams, UpstreamStatus
from heylook_llm.errors import CapabilityError, HeylookError, InvalidRequest, ModelLoadError, ModelNotFound
from heylook_llm.model_info import ModelFileError, ModelFileInfo, ModelInfoReader, read_model_files
from heylook_llm.types import (
    EmbeddingInputs,
    EmbeddingResult,
    Feature,
    GenerationRequest,
    RerankResult,
    SamplingOverrides,
)

__all__ = ["ActiveGeneration", "BackendFactory", "Embedded", "Engine", "LoadedStatus", "Reranked", "UpstreamStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Embedded:
    result: EmbeddingResult
    load_seconds: float
    """Time the request waited for the model to load (0 when it was loaded already)."""


@dataclass(frozen=True, slots=True)
class Reranked:
    result: RerankResult
    load_seconds: float
    """Time the request waited for the model to load (0 when it was loaded already)."""


@dataclass(frozen=True, slots=True)
class LoadedStatus:
    """A model whose weights are in memory now."""

    entry: ModelEntry
    facts: ModelFacts
    features: frozenset[Feature]
    expires_at: float | None
    """Wall-clock expiry of its keep-alive; None: kept for ever."""
    max_parallel: int
    footprint: Footprint = NO_FOOTPRINT
    """Its memory: the estimate before load with the measured resident growth (engine/memory.py)."""


class Engine:
    def __init__(
        self,
        registry: Registry,
        settings: ServerSettings,
        backend_factory: BackendFactory | None = None,
        metrics: MetricsRecorder | None = None,
        model_info: ModelInfoReader | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else MetricsRecorder()
        self._files = model_info if model_info is not None else ModelInfoReader()
        self._router = ModelRouter(registry, settings, backend_factory, metrics=self.metrics, model_info=self._files)
        self._store = RegistryStore(registry.source) if registry.source is not None else None
        self._catalogue_lock = asyncio.Lock()
        self._backend_probe = BackendProbe()
        self.lifecycle = Lifecycle()
        """Readiness (the start-up model) and the shutdown drain."""
        self._upstreams = Upstreams(self.metrics)
        """Models served by other servers (engine/upstream): outside the router, its LRU and memory budget."""
        self._upstreams.sync(registry.enabled())
        self.dashboard = DashboardView(self, self._router)
        """What the web page's dashboard shows (engine/dashboard_view.py)."""

    # --- the catalogue -----------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        return self._router.registry

    def models(self) -> list[ModelEntry]:
        """The enabled models, in models.yaml order."""
        return self._router.registry.enabled()

    def resolve(self, name: str, *, latest_tag: bool = False) -> ModelEntry:
        """The enabled model called `name` (an unknown name is ModelNotFound, never another model). With
        `latest_tag`, `NAME:latest` also finds `NAME` (Ollama's names)."""
        registry = self._router.registry
        entry = registry.get(name)
        if entry is None and latest_tag:
            base = name.removesuffix(":latest")
            entry = registry.get(base) if base != name else None
        if entry is None:
            raise ModelNotFound(name, [m.id for m in registry.enabled()])
        return entry

    async def copy_model(self, source: ModelEntry, new_id: str) -> None:
        await self._edit(lambda store: store.copy_entry(source.id, new_id))

    async def delete_model(self, entry: ModelEntry) -> None:
        await self._edit(lambda store: store.remove_entry(entry.id))

    async def add_variant(
        self,
        base: ModelEntry,
        new_id: str,
        *,
        system: str | None,
        sampling: SamplingOverrides,
        chat_template: str | None,
        context_length: int | None,
    ) -> None:
        """A new model with the weights of `base` and other defaults (Ollama's /api/create)."""
        if chat_template is not None:
            await asyncio.to_thread(check_chat_template, chat_template)
        await self._edit(
            lambda store: store.add_variant(
                base.id,
                new_id,
                system=system,
                sampling=sampling,
                chat_template=chat_template,
                context_length=context_length,
            )
        )

    async def _edit(self, edit: Callable[[RegistryStore], Registry]) -> None:
        """One models.yaml edit at a time (off the loop); the result is served at once."""
        if self._store is None:
            raise CapabilityError("the models were not loaded from a models.yaml file, so they cannot be changed")
        store = self._store
        async with self._catalogue_lock:
            registry = await asyncio.to_thread(edit, store)
            self._router.replace_registry(registry)
            self._upstreams.sync(registry.enabled())

    # --- running models ------------------------------------------------------------------------------------
    async def generate(
        self, entry: ModelEntry, request: GenerationRequest, *, keep_alive: float | None = None
    ) -> ActiveGeneration:
        """Start a generation on `entry` (loading it if needed); errors in the request surface here, before any
        output. Close the returned generation when done (it cancels the work if it is still running)."""
        self.lifecycle.refuse_if_shutting_down()
        self._ensure_background_tasks()
        if entry.upstream is not None:
            return await self._upstreams.generate(entry, request)
        return await start_generation(self._router, entry, request, keep_alive=keep_alive)

    async def generate_all(
        self,
        entry: ModelEntry,
        requests: list[GenerationRequest],
        *,
        keep_alive: float | None = None,
        param: str | None = None,
    ) -> list[ActiveGeneration]:
        """Start several generations of one request (a prompt list, `n` choices) admitted whole: refused together
        (413 naming max_queued_requests_per_model when they could never fit, 503 when the queue is full now),
        and the first that fails cancels all the others before its error is raised."""
        started = await self._generate_parts(entry, requests, keep_alive, param, all_or_nothing=True)
        return [a for a in started if isinstance(a, ActiveGeneration)]

    async def generate_each(
        self,
        entry: ModelEntry,
        requests: list[GenerationRequest],
        *,
        keep_alive: float | None = None,
        param: str | None = None,
    ) -> list[ActiveGeneration | HeylookError]:
        """As `generate_all`, but a part refused once queued is returned as its error in its place and the others
        go on (batch groups report failures per group)."""
        return await self._generate_parts(entry, requests, keep_alive, param, all_or_nothing=False)

    async def _generate_parts(
        self,
        entry: ModelEntry,
        requests: list[GenerationRequest],
        keep_alive: float | None,
        param: str | None,
        *,
        all_or_nothing: bool,
    ) -> list[ActiveGeneration | HeylookError]:
        self.lifecycle.refuse_if_shutting_down()
        self._ensure_background_tasks()
        if entry.upstream is not None:
            return await self._upstream_parts(entry, requests, all_or_nothing=all_or_nothing)
        return await start_generations(
            self._router, entry, requests, keep_alive=keep_alive, all_or_nothing=all_or_nothing, param=param
        )

    async def _upstream_parts(
        self, entry: ModelEntry, requests: list[GenerationRequest], *, all_or_nothing: bool
    ) -> list[ActiveGeneration | HeylookError]:
        """Several generations on an upstream model, started at once (the upstream queues them); with
        `all_or_nothing` the first failure closes the others and is raised."""
        results = await asyncio.gather(*(self._upstreams.generate(entry, r) for r in requests), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None and (all_or_nothing or not isinstance(failed, HeylookError)):
            for started in results:
                if isinstance(started, ActiveGeneration):
                    started.close()
            raise failed
        # Past the check above, every failure left is a HeylookError standing in its part's place.
        return [r for r in results if isinstance(r, ActiveGeneration | HeylookError)]

    async def count_prompt_tokens(self, entry: ModelEntry, request: GenerationRequest) -> int:
        """The tokens of `request`'s prompt as `generate` would run it (chat template, tools, entry defaults),
        counted by the model's own tokenizer on its worker; loads the model if needed, generates nothing."""
        self.lifecycle.refuse_if_shutting_down()
        if entry.upstream is not None:
            raise CapabilityError(
                f"model '{entry.id}' runs on an upstream server, whose tokenizer this server cannot run; "
                "its token counts come in each reply's usage",
                param="model",
            )
        request = with_entry_defaults(request, entry)
        async with self._router.acquire(entry) as lease:
            ready, _ = prepared(request, entry, lease)
            return await lease.worker.call(lambda backend: backend.count_tokens(ready))

    def starter(self, entry: ModelEntry, *, keep_alive: float | None = None) -> StartGeneration:
        """Starts generations of requests on `entry` (for several generations of one request: choices, batch
        groups, prompt lists)."""
        return _ModelStarter(self, entry, keep_alive)

    async def embed(
        self, entry: ModelEntry, inputs: EmbeddingInputs, *, truncate: bool = False, keep_alive: float | None = None
    ) -> Embedded:
        """Vectors for `inputs`; no inputs only loads the model (as Ollama's empty /api/embed does)."""
        if entry.upstream is not None:
            if not inputs:
                return Embedded(EmbeddingResult(), 0.0)
            return Embedded(await self._upstreams.embed(entry, inputs, truncate=truncate), 0.0)
        async with self._router.acquire(entry, keep_alive=keep_alive) as lease:
            if not inputs:
                return Embedded(EmbeddingResult(), lease.load_seconds)
            result = await lease.worker.call(lambda backend: backend.embed(inputs, truncate=truncate))
            return Embedded(result, lease.load_seconds)

    async def rerank(
        self, entry: ModelEntry, query: str, documents: list[str], *, keep_alive: float | None = None
    ) -> Reranked:
        """One relevance score per document for `query`, in the documents' order (a reranker model)."""
        self.lifecycle.refuse_if_shutting_down()
        # Refused before loading: a chat model asked to rerank should not be loaded only to say no.
        if Feature.RERANK not in self.features(entry):
            raise CapabilityError(
                f"model '{entry.id}' is not a reranker (a reranker GGUF is served with rerank: true in its config)",
                param="model",
            )
        async with self._router.acquire(entry, keep_alive=keep_alive) as lease:
            result = await lease.worker.call(lambda backend: backend.rerank(query, documents))
            return Reranked(result, lease.load_seconds)

    async def load(self, entry: ModelEntry, *, keep_alive: float | None = None) -> None:
        """Load the model (an upstream model is always ready: nothing is loaded here)."""
        self._ensure_background_tasks()
        if entry.upstream is not None:
            return
        await self._router.load(entry, keep_alive=keep_alive)

    def load_progress(self, entry: ModelEntry) -> float | None:
        """While `entry` loads: the share of its weights read (0 to 1); None when not loading or not reported."""
        return self._router.load_progress(entry.id)

    async def expire(self, entry: ModelEntry) -> bool:
        """Unload now if idle, else once its requests finish; False when it was not loaded."""
        if entry.upstream is not None:
            return False
        return await self._router.expire(entry.id)

    async def unload(self, entry: ModelEntry) -> bool:
        """Unload now if loaded and idle; True when it was unloaded."""
        if entry.upstream is not None:
            return False
        return await self._router.unload(entry.id)

    async def preload(self, model_id: str | None) -> None:
        """Load the start-up model, then every model marked `preload: true`; a failure is logged and the server
        keeps running (not ready when it is the start-up model, see `lifecycle.readiness`)."""
        self._ensure_background_tasks()
        if model_id is not None:
            await self._load_startup_model(model_id)
        for entry in self.models():
            if entry.preload and entry.id != model_id:
                try:
                    await self.load(entry)
                except HeylookError as exc:
                    log.error("could not preload model '%s': %s (the server keeps running)", entry.id, exc.message)
                except Exception:
                    log.exception("could not preload model '%s' (the server keeps running)", entry.id)

    async def _load_startup_model(self, model_id: str) -> None:
        self.lifecycle.startup_loading(model_id)
        try:
            await self.load(self.resolve(model_id))
        except HeylookError as exc:
            log.error("could not load start-up model '%s': %s (the server keeps running)", model_id, exc.message)
            self.lifecycle.startup_failed(model_id, exc.message)
            return
        except Exception:
            log.exception("could not load start-up model '%s' (the server keeps running)", model_id)
            self.lifecycle.startup_failed(model_id, f"the start-up model '{model_id}' failed to load")
            return
        self.lifecycle.startup_loaded(model_id)

    async def drain(self, grace_seconds: float) -> None:
        """Shutdown: refuse new generations, give those in flight `grace_seconds`, then end the rest with
        ServerShuttingDown (streams end with their dialect's error event)."""
        await self.lifecycle.drain(
            grace_seconds,
            lambda: self._router.in_flight() + self._upstreams.in_flight(),
            lambda error: self._router.fail_in_flight(error) + self._upstreams.stop_all(error),
        )

    async def close(self) -> None:
        await self.dashboard.close()
        await self._upstreams.close()
        await self._router.close()

    # --- describing models ---------------------------------------------------------------------------------
    def loaded(self) -> list[LoadedStatus]:
        return [
            LoadedStatus(
                m.entry,
                m.worker.backend.facts,
                m.worker.backend.features,
                m.expires_at(),
                m.worker.max_parallel,
                m.footprint,
            )
            for m in self._router.loaded()
        ]

    def loaded_status(self, entry: ModelEntry) -> LoadedStatus | None:
        model = self._router.loaded_model(entry.id)
        if model is None:
            return None
        backend = model.worker.backend
        return LoadedStatus(
            model.entry, backend.facts, backend.features, model.expires_at(), backend.max_parallel, model.footprint
        )

    async def footprint(self, entry: ModelEntry) -> Footprint:
        """The model's memory: measured when loaded, else estimated from its files and models.yaml settings."""
        if entry.upstream is not None:
            return NO_FOOTPRINT
        return await self._router.estimate(entry)

    async def with_context(self, entry: ModelEntry, num_ctx: int | None, *, param: str) -> ModelEntry:
        """`entry` able to hold `num_ctx` tokens per sequence (Ollama's options.num_ctx, OpenAI's num_ctx
        extension): itself when its context (configured or loaded) is as large, else a copy with the larger n_ctx,
        which the router loads in place of the smaller one. Past the model's trained context: 400 naming both."""
        if num_ctx is None or entry.upstream is not None:
            return entry
        cfg = entry.config
        loaded = self._router.loaded_model(entry.id)
        current = cfg.n_ctx if isinstance(cfg, LlamaCppConfig) else 0
        if loaded is not None and loaded.context is not None:
            current = max(current, loaded.context)
        if num_ctx <= current:
            return entry
        trained = (await self.file_info(entry)).context_length
        if trained and num_ctx > trained:
            raise InvalidRequest(
                f"{param.rsplit('.', 1)[-1]} {num_ctx} is larger than the {trained} tokens model '{entry.id}' was "
                "trained for",
                param=param,
            )
        if not isinstance(cfg, LlamaCppConfig):
            # MLX models run with their own (trained) context window, which holds num_ctx.
            return entry
        if cfg.embedding:
            raise InvalidRequest(
                f"{param.rsplit('.', 1)[-1]} {num_ctx} is larger than the embedding model's n_ctx of {cfg.n_ctx} "
                "tokens (set n_ctx in models.yaml)",
                param=param,
            )
        return entry.model_copy(update={"config": cfg.model_copy(update={"n_ctx": num_ctx})})

    def upstream_status(self, entry: ModelEntry) -> UpstreamStatus | None:
        """Where an upstream model runs and how its replicas are (None for a model run here)."""
        if entry.upstream is None:
            return None
        self._upstreams.ensure_checking()
        return self._upstreams.status(entry)

    def remote(self) -> list[UpstreamStatus]:
        """Every enabled upstream model with its replicas' states (Ollama's /api/ps lists them as remote)."""
        return [s for s in (self.upstream_status(e) for e in self.models()) if s is not None]

    def _local_files(self, entry: ModelEntry) -> Path:
        config = entry.config
        if isinstance(config, UpstreamConfig):
            raise CapabilityError(
                f"model '{entry.id}' runs on an upstream server; its files are not on this machine", param="model"
            )
        return config.model_path

    def files_modified_at(self, entry: ModelEntry) -> int:
        """Unix time the model's file or folder last changed (0 for an upstream model or unreadable files)."""
        config = entry.config
        if isinstance(config, UpstreamConfig):
            return 0
        try:
            return int(config.model_path.stat().st_mtime)
        except OSError:
            return 0

    async def file_info(self, entry: ModelEntry, *, large_arrays: bool = False) -> ModelFileInfo:
        """What the model's files say (GGUF header or MLX config); read once per file version."""
        path = self._local_files(entry)
        try:
            if large_arrays:
                return await asyncio.to_thread(read_model_files, path, include_large_arrays=True)
            return await asyncio.to_thread(self._files.info, path)
        except (ModelFileError, OSError) as exc:
            raise self._router.for_clients(ModelLoadError(entry.id, f"its files cannot be read: {exc}"), entry) from exc

    async def digest(self, entry: ModelEntry) -> str:
        """The sha256 of the model's files (seconds per gigabyte the first time; cached after)."""
        try:
            return await asyncio.to_thread(self._files.digest, self._local_files(entry))
        except (ModelFileError, OSError) as exc:
            raise self._router.for_clients(ModelLoadError(entry.id, f"its files cannot be read: {exc}"), entry) from exc

    def backend_name(self, entry: ModelEntry) -> str:
        """The backend that runs `entry` (llama_cpp, mlx, mlx:vision, ...)."""
        return backend_key(entry)

    async def backend_imports(self) -> dict[str, BackendImport]:
        """Whether each backend imports on this machine (asked once per process)."""
        imports = await self._backend_probe.imports()
        # Upstream providers are HTTP clients (httpx, a core dependency): always available.
        return {**imports, **{p: BackendImport(True) for p in UPSTREAM_PROVIDERS}}

    def features(self, entry: ModelEntry, info: ModelFileInfo | None = None) -> frozenset[Feature]:
        """What the model does: declared by its backend when loaded, else expected from its entry and files."""
        if entry.upstream is not None:
            return self._upstreams.features(entry)
        status = self.loaded_status(entry)
        if status is not None:
            return shown_features(status.features, entry, status.facts.chat_template)
        expected = expected_features(entry, fill_in_middle=bool(info is not None and info.has_fill_in_middle))
        template = entry.config.template_override() or (info.chat_template if info is not None else None)
        return shown_features(expected, entry, template)

    def _ensure_background_tasks(self) -> None:
        """Started by the first request (on the running loop): upstream health checks and the live figures."""
        self._upstreams.ensure_checking()
        self.dashboard.ensure_sampling()


class _ModelStarter:
    """Engine.starter: starts generations on one model with one keep-alive."""

    def __init__(self, engine: Engine, entry: ModelEntry, keep_alive: float | None) -> None:
        self._engine = engine
        self._entry = entry
        self._keep_alive = keep_alive
        self.capacity = engine.settings.max_queued_requests_per_model

    async def __call__(self, request: GenerationRequest) -> ActiveGeneration:
        return await self._engine.generate(self._entry, request, keep_alive=self._keep_alive)

    async def all(self, requests: list[GenerationRequest], *, param: str | None = None) -> list[ActiveGeneration]:
        return await self._engine.generate_all(self._entry, requests, keep_alive=self._keep_alive, param=param)

    async def each(
        self, requests: list[GenerationRequest], *, param: str | None = None
    ) -> list[ActiveGeneration | HeylookError]:
        return await self._engine.generate_each(self._entry, requests, keep_alive=self._keep_alive, param=param)
