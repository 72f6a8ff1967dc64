"""The upstream models of the registry: their replica pools, one pooled HTTP client, the health checker, and
generations and embeddings started on the least busy healthy replica, retried once on another before the first
token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from heylook_llm.config.registry import ModelEntry, UpstreamConfig
from heylook_llm.engine.features import refuse_undeclared
from heylook_llm.engine.generation import with_entry_defaults
from heylook_llm.engine.metrics import MetricsRecorder, ReplicaFigures
from heylook_llm.engine.tasks import cancel_and_wait
from heylook_llm.engine.upstream.capabilities import upstream_features
from heylook_llm.engine.upstream.client import Timeouts, UpstreamClient, UpstreamUnavailable, WireName
from heylook_llm.engine.upstream.generation import UpstreamGeneration, close_later
from heylook_llm.engine.upstream.health import Watched, check_forever
from heylook_llm.engine.upstream.replicas import Replica, ReplicaPool, affinity_key, replicas_of
from heylook_llm.errors import CapabilityError, HeylookError, ServerBusy
from heylook_llm.types import EmbeddingInputs, EmbeddingResult, Feature, GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)

ATTEMPTS = 2
"""A request that fails before its first token is tried once more, on another replica."""


@dataclass(slots=True)
class UpstreamModel:
    entry: ModelEntry
    config: UpstreamConfig
    wire: WireName
    pool: ReplicaPool
    features: frozenset[Feature]

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(self.config.connect_timeout_seconds, self.config.read_timeout_seconds)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    name: str
    base_url: str
    model: str
    healthy: bool
    in_flight: int
    requests: int
    errors: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """An upstream model as /api/ps and the dashboard show it."""

    entry: ModelEntry
    provider: str
    replicas: list[ReplicaStatus]

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.replicas if r.healthy)

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)


def _model_of(entry: ModelEntry, config: UpstreamConfig) -> UpstreamModel:
    wire: WireName = "ollama" if entry.provider == "ollama" else "openai"
    features = upstream_features(entry.provider, config)
    return UpstreamModel(entry, config, wire, ReplicaPool(replicas_of(config)), features)


class Upstreams:
    def __init__(self, metrics: MetricsRecorder, client: UpstreamClient | None = None) -> None:
        self._metrics = metrics
        self._client = client
        self._models: dict[str, UpstreamModel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._active: set[UpstreamGeneration] = set()
        """Generations streaming now (the shutdown drain waits for them, then stops them)."""
        self._health: asyncio.Task[None] | None = None
        metrics.watch_upstreams(self.figures)

    def sync(self, entries: list[ModelEntry]) -> None:
        """Follow the registry: a pool per upstream entry; an unchanged entry keeps its replicas' state."""
        kept: dict[str, UpstreamModel] = {}
        for entry in entries:
            config = entry.upstream
            if config is None:
                continue
            old = self._models.get(entry.id)
            if old is not None and old.config == config and old.entry.provider == entry.provider:
                old.entry = entry
                kept[entry.id] = old
                continue
            kept[entry.id] = _model_of(entry, config)
        self._models = kept

    def model(self, entry: ModelEntry) -> UpstreamModel:
        found = self._models.get(entry.id)
        config = entry.upstream
        if config is None:
            raise ValueError(f"model '{entry.id}' is not an upstream model")
        if found is None or found.config != config or found.entry.provider != entry.provider:
            found = self._models[entry.id] = _model_of(entry, config)
        return found

    def _http(self) -> UpstreamClient:
        if self._client is None:
            self._client = UpstreamClient()
        return self._client

    def ensure_checking(self) -> None:
        """Start the health checker (on the running loop) if it is not running."""
        if not self._models or (self._health is not None and not self._health.done()):
            return
        self._health = asyncio.get_running_loop().create_task(
            check_forever(self._http(), self._watched), name="upstream-health"
        )

    def _watched(self) -> list[Watched]:
        return [
            Watched(m.entry.id, m.wire, r, m.config.health_check_seconds, m.config.connect_timeout_seconds)
            for m in self._models.values()
            for r in m.pool.replicas
        ]

    async def close(self) -> None:
        await cancel_and_wait(self._health)
        self._health = None
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- generating --------------------------------------------------------------------------------------
    async def generate(self, entry: ModelEntry, request: GenerationRequest) -> UpstreamGeneration:
        model = self.model(entry)
        self.ensure_checking()
        request = with_entry_defaults(request, entry)
        trace = self._metrics.trace(entry.id, request)
        try:
            refuse_undeclared(request, model.features, entry.id)
            replica, stream, first = await self._start(model, request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._metrics.generation_failed(entry.id, exc)
                trace.failed(exc)
            else:
                trace.cancelled()
            raise
        trace.first_output()
        generation = UpstreamGeneration(
            entry.id, replica, stream, first, trace, self._metrics, close_later(self._closing)
        )
        self._active.add(generation)
        generation.on_release = self._active.discard
        return generation

    def in_flight(self) -> int:
        """Requests sent to upstreams and not finished (generations and embeddings)."""
        return sum(r.in_flight for m in self._models.values() for r in m.pool.replicas)

    def stop_all(self, error: HeylookError) -> int:
        """End every streaming generation with `error` at its next chunk; returns how many."""
        active = list(self._active)
        for generation in active:
            generation.stop(error)
        return len(active)

    async def _start(
        self, model: UpstreamModel, request: GenerationRequest
    ) -> tuple[Replica, AsyncGenerator[GenerationChunk, None], GenerationChunk]:
        key = affinity_key(request)
        tried: set[int] = set()
        last: UpstreamUnavailable | None = None
        for _ in range(ATTEMPTS):
            replica = model.pool.pick(key, frozenset(tried))
            if replica is None:
                break
            tried.add(replica.index)
            replica.started()
            sent = time.perf_counter()
            stream = self._http().stream(model.wire, replica, request, model.timeouts)
            try:
                first = await anext(stream)
            except UpstreamUnavailable as exc:
                replica.ended()
                replica.failed(exc.message)
                log.warning("model '%s': %s", model.entry.id, exc.message)
                last = exc
                continue
            except BaseException:
                replica.ended()
                await stream.aclose()
                raise
            replica.first_output(time.perf_counter() - sent)
            return replica, stream, first
        raise self._unavailable(model, last)

    @staticmethod
    def _unavailable(model: UpstreamModel, last: UpstreamUnavailable | None) -> HeylookError:
        """The error when no replica took the request: 503 with Retry-After while none is healthy."""
        if last is not None and model.pool.healthy():
            return last
        retry = max(1, math.ceil(model.pool.soonest_check() or 1.0))
        if last is not None:
            return ServerBusy(f"no replica of model '{model.entry.id}' answered ({last.message})", retry)
        reasons = "; ".join(f"{r.name}: {r.last_error}" for r in model.pool.replicas if r.last_error)
        return ServerBusy(
            f"every replica of model '{model.entry.id}' is down ({reasons or 'failed health checks'}); "
            f"they are checked again within {retry} s",
            retry,
        )

    async def embed(self, entry: ModelEntry, inputs: EmbeddingInputs, *, truncate: bool) -> EmbeddingResult:
        model = self.model(entry)
        self.ensure_checking()
        if Feature.EMBEDDING not in model.features:
            raise CapabilityError(
                f"model '{entry.id}' does not produce embeddings (an upstream declares them in features)",
                param="model",
            )
        tried: set[int] = set()
        last: UpstreamUnavailable | None = None
        for _ in range(ATTEMPTS):
            replica = model.pool.pick(None, frozenset(tried))
            if replica is None:
                break
            tried.add(replica.index)
            replica.started()
            sent = time.perf_counter()
            try:
                result = await self._http().embed(model.wire, replica, inputs, truncate, model.timeouts)
            except UpstreamUnavailable as exc:
                replica.failed(exc.message)
                last = exc
                continue
            finally:
                replica.ended()
            replica.first_output(time.perf_counter() - sent)
            return result
        raise self._unavailable(model, last)

    # --- describing ----------------------------------------------------------------------------------------
    def status(self, entry: ModelEntry) -> UpstreamStatus:
        model = self.model(entry)
        return UpstreamStatus(
            entry,
            entry.provider,
            [
                ReplicaStatus(r.name, r.base_url, r.model, r.healthy, r.in_flight, r.requests, r.errors, r.last_error)
                for r in model.pool.replicas
            ],
        )

    def features(self, entry: ModelEntry) -> frozenset[Feature]:
        return self.model(entry).features

    def figures(self) -> list[ReplicaFigures]:
        return [
            ReplicaFigures(
                m.entry.id,
                r.name,
                r.base_url,
                r.healthy,
                r.in_flight,
                r.requests,
                r.errors,
                r.latency_sum_seconds,
                r.latency_count,
                r.last_error,
            )
            for m in self._models.values()
            for r in m.pool.replicas
        ]
