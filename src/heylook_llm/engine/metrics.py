"""Measured server figures: one record per finished generation (from its final chunk's `GenerationStats`, the
same numbers that fill OpenAI's `usage` and Ollama's durations), plus loads, evictions, errors and queue depth.

The recorder keeps a sliding window of recent generations per model (for p50/p95) and totals since start, and
mirrors everything into its own Prometheus `CollectorRegistry` (one per app, never the global default). It is
called on the event loop once per request, never per token.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from heylook_llm.engine.activity import GenerationTrace, LiveSeries, RequestHistory
from heylook_llm.types import GenerationRequest, GenerationStats

DEFAULT_WINDOW = 500
"""Generations per model (and overall) kept for the percentiles."""

# Seconds: local generation spans sub-millisecond queue waits to minutes-long replies.
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(slots=True, frozen=True)
class ModelLoadState:
    """What the router reports about one model when Prometheus scrapes (read at scrape time, not stored)."""

    model_id: str
    loaded: bool
    queued: int
    running: int
    memory_bytes: int = 0
    """Memory the budget counts for the loaded model (measured where measured)."""
    estimated_bytes: int = 0
    """The estimate made before it loaded."""
    pinned: bool = False


@dataclass(slots=True, frozen=True)
class ReplicaFigures:
    """One replica of an upstream model as this server sees it (read at scrape time from engine/upstream)."""

    model_id: str
    replica: str
    base_url: str
    healthy: bool
    in_flight: int
    requests: int
    errors: int
    time_to_first_token_sum_seconds: float
    time_to_first_token_count: int
    last_error: str | None


@dataclass(slots=True, frozen=True)
class GenerationSample:
    """The figures of one finished generation that the window keeps."""

    time_to_first_token: float
    queue_wait: float
    prompt_tokens_per_second: float | None
    generation_tokens_per_second: float | None


def sample_of(stats: GenerationStats) -> GenerationSample:
    """Derived per-request figures. Prompt speed counts the tokens actually evaluated (not those reused from the
    prefix cache); generation speed is completion tokens over generation time, as in Ollama's eval rate."""
    evaluated = stats.prompt_tokens - stats.cached_prompt_tokens
    prompt_tps = evaluated / stats.prompt_eval_seconds if evaluated > 0 and stats.prompt_eval_seconds > 0 else None
    gen_tps = (
        stats.completion_tokens / stats.generation_seconds
        if stats.completion_tokens > 0 and stats.generation_seconds > 0
        else None
    )
    return GenerationSample(
        time_to_first_token=stats.load_seconds + stats.queue_seconds + stats.prompt_eval_seconds,
        queue_wait=stats.queue_seconds,
        prompt_tokens_per_second=prompt_tps,
        generation_tokens_per_second=gen_tps,
    )


@dataclass(slots=True)
class Totals:
    """Counts and sums since start, for one model or for all."""

    generations: int = 0
    errors: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_eval_seconds: float = 0.0
    generation_seconds: float = 0.0
    queue_seconds: float = 0.0
    loads: int = 0
    load_failures: int = 0
    load_seconds: float = 0.0
    evictions: int = 0
    expirations: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)

    def add(self, stats: GenerationStats) -> None:
        self.generations += 1
        self.prompt_tokens += stats.prompt_tokens
        self.cached_prompt_tokens += stats.cached_prompt_tokens
        self.completion_tokens += stats.completion_tokens
        self.prompt_eval_seconds += stats.prompt_eval_seconds
        self.generation_seconds += stats.generation_seconds
        self.queue_seconds += stats.queue_seconds


@dataclass(slots=True)
class ModelFigures:
    totals: Totals = field(default_factory=Totals)
    window: deque[GenerationSample] = field(default_factory=deque)
    load_times: deque[float] = field(default_factory=deque)


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile (`fraction` in 0..1); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class _RouterStateCollector(Collector):
    """Gauges read from the router at scrape time, so they can never go stale."""

    def __init__(self, read: Callable[[], list[ModelLoadState]], budget: Callable[[], int]) -> None:
        self._read = read
        self._budget = budget

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names; answering here keeps it from reading a router still being built.
        return self._families([], 0)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._read(), self._budget())

    @staticmethod
    def _families(states: list[ModelLoadState], budget: int) -> Iterator[Metric]:
        budget_gauge = GaugeMetricFamily("heylook_memory_budget_bytes", "Memory the loaded models may use together")
        budget_gauge.add_metric([], budget)
        used = GaugeMetricFamily("heylook_memory_used_bytes", "Memory the loaded models are counted as")
        used.add_metric([], sum(s.memory_bytes for s in states if s.loaded))
        model_memory = GaugeMetricFamily(
            "heylook_model_memory_bytes", "A loaded model's memory (measured where measured)", labels=["model"]
        )
        estimated = GaugeMetricFamily(
            "heylook_model_memory_estimate_bytes", "A loaded model's memory as estimated before load", labels=["model"]
        )
        for state in states:
            if state.loaded:
                model_memory.add_metric([state.model_id], state.memory_bytes)
                estimated.add_metric([state.model_id], state.estimated_bytes)
        yield budget_gauge
        yield used
        yield model_memory
        yield estimated
        loaded = GaugeMetricFamily("heylook_models_loaded", "Models loaded now")
        loaded.add_metric([], sum(1 for s in states if s.loaded))
        queued = GaugeMetricFamily("heylook_queue_depth", "Requests waiting for a model's worker", labels=["model"])
        running = GaugeMetricFamily("heylook_requests_running", "Requests a model is generating now", labels=["model"])
        for state in states:
            queued.add_metric([state.model_id], state.queued)
            running.add_metric([state.model_id], state.running)
        yield loaded
        yield queued
        yield running


class _UpstreamCollector(Collector):
    """Per-replica figures of upstream models, read at scrape time."""

    def __init__(self, read: Callable[[], list[ReplicaFigures]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        return self._families(self._read())

    @staticmethod
    def _families(replicas: list[ReplicaFigures]) -> Iterator[Metric]:
        labels = ["model", "replica", "base_url"]
        up = GaugeMetricFamily("heylook_upstream_up", "1 when the upstream replica is in rotation", labels=labels)
        in_flight = GaugeMetricFamily(
            "heylook_upstream_in_flight", "Requests sent to the upstream replica now", labels=labels
        )
        requests = CounterMetricFamily("heylook_upstream_requests", "Requests sent to the replica", labels=labels)
        errors = CounterMetricFamily(
            "heylook_upstream_errors", "Requests that failed on the replica (connection, timeout, 5xx)", labels=labels
        )
        ttft = SummaryMetricFamily(
            "heylook_upstream_time_to_first_token_seconds", "From sending to the replica's first output", labels=labels
        )
        for r in replicas:
            values = [r.model_id, r.replica, r.base_url]
            up.add_metric(values, 1 if r.healthy else 0)
            in_flight.add_metric(values, r.in_flight)
            requests.add_metric(values, r.requests)
            errors.add_metric(values, r.errors)
            ttft.add_metric(values, r.time_to_first_token_count, r.time_to_first_token_sum_seconds)
        yield from (up, in_flight, requests, errors, ttft)


class MetricsRecorder:
    """Figures for /v1/performance and /metrics. Lives on `app.state` (through the router); no global state."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self.started_at = time.time()
        self._started = time.monotonic()
        self._models: dict[str, ModelFigures] = {}
        self._overall = ModelFigures(window=deque(maxlen=window), load_times=deque(maxlen=window))
        self._upstreams: Callable[[], list[ReplicaFigures]] = list
        self._router_states: Callable[[], list[ModelLoadState]] = list
        self._budget: Callable[[], int] = lambda: 0
        self.history = RequestHistory()
        """The latest requests, for the dashboard."""
        self.live = LiveSeries()
        """Per-second figures per model over the last minutes, for the dashboard's plots."""
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._generations = Counter("heylook_generations", "Generations finished", ["model"], registry=reg)
        self._errors = Counter("heylook_generation_errors", "Generations that failed", ["model", "error"], registry=reg)
        self._cancelled = Counter(
            "heylook_generations_cancelled", "Generations abandoned by their client", ["model"], registry=reg
        )
        self._prompt_tokens = Counter("heylook_prompt_tokens", "Prompt tokens", ["model"], registry=reg)
        self._cached_tokens = Counter(
            "heylook_prompt_tokens_cached", "Prompt tokens reused from the prefix cache", ["model"], registry=reg
        )
        self._completion_tokens = Counter("heylook_completion_tokens", "Generated tokens", ["model"], registry=reg)
        self._draft_tokens = Counter(
            "heylook_draft_tokens", "Tokens drafted for speculative decoding", ["model"], registry=reg
        )
        self._accepted_draft_tokens = Counter(
            "heylook_draft_tokens_accepted", "Drafted tokens the model agreed with", ["model"], registry=reg
        )
        self._ttft = self._histogram("heylook_time_to_first_token_seconds", "Load + queue wait + prompt evaluation")
        self._queue_wait = self._histogram("heylook_queue_wait_seconds", "Time queued before a worker admitted it")
        self._prompt_eval = self._histogram("heylook_prompt_eval_seconds", "Time evaluating the prompt")
        self._generation = self._histogram("heylook_generation_seconds", "Time generating after the first token")
        self._load = self._histogram("heylook_model_load_seconds", "Time loading a model")
        self._loads = Counter("heylook_model_loads", "Models loaded", ["model"], registry=reg)
        self._load_failures = Counter("heylook_model_load_failures", "Model loads that failed", ["model"], registry=reg)
        self._evictions = Counter(
            "heylook_model_evictions", "Models unloaded to make room for another", ["model"], registry=reg
        )
        self._expirations = Counter(
            "heylook_model_expirations", "Models unloaded when their keep-alive ran out", ["model"], registry=reg
        )

    def _histogram(self, name: str, documentation: str) -> Histogram:
        return Histogram(name, documentation, ["model"], buckets=_SECONDS_BUCKETS, registry=self.registry)

    def watch_router(self, read: Callable[[], list[ModelLoadState]], budget: Callable[[], int]) -> None:
        """Report loaded models, queue depth, running requests and memory from `read()` and the memory budget from
        `budget()` at every scrape (and in /v1/performance)."""
        self._router_states = read
        self._budget = budget
        self.registry.register(_RouterStateCollector(read, budget))

    def memory_report(self) -> dict[str, Any]:
        """The budget and what each loaded model takes (for /v1/performance)."""
        loaded = [s for s in self._router_states() if s.loaded]
        return {
            "budget_bytes": self._budget(),
            "used_bytes": sum(s.memory_bytes for s in loaded),
            "loaded": [
                {"model": s.model_id, "bytes": s.memory_bytes, "estimated_bytes": s.estimated_bytes, "pinned": s.pinned}
                for s in loaded
            ],
        }

    def watch_upstreams(self, read: Callable[[], list[ReplicaFigures]]) -> None:
        """Report each upstream replica's state, requests, errors and latency from `read()` (scrapes and
        /v1/performance)."""
        self._upstreams = read
        self.registry.register(_UpstreamCollector(read))

    def upstream_replicas(self) -> list[ReplicaFigures]:
        return self._upstreams()

    def _model(self, model_id: str) -> ModelFigures:
        figures = self._models.get(model_id)
        if figures is None:
            figures = ModelFigures(window=deque(maxlen=self.window), load_times=deque(maxlen=self.window))
            self._models[model_id] = figures
        return figures

    # --- recording (event loop, once per request) ----------------------------------------------
    def trace(self, model_id: str, request: GenerationRequest) -> GenerationTrace:
        """Follow one generation for the dashboard's history and live figures (started when it reaches the
        engine)."""
        return GenerationTrace(self.history, self.live, model_id, request)

    def generation_finished(self, model_id: str, stats: GenerationStats) -> None:
        sample = sample_of(stats)
        for figures in (self._model(model_id), self._overall):
            figures.totals.add(stats)
            figures.window.append(sample)
        self._generations.labels(model_id).inc()
        self._prompt_tokens.labels(model_id).inc(stats.prompt_tokens)
        self._cached_tokens.labels(model_id).inc(stats.cached_prompt_tokens)
        self._completion_tokens.labels(model_id).inc(stats.completion_tokens)
        if stats.draft_tokens:
            # Only models that speculate get these series.
            self._draft_tokens.labels(model_id).inc(stats.draft_tokens)
            self._accepted_draft_tokens.labels(model_id).inc(stats.accepted_draft_tokens)
        self._ttft.labels(model_id).observe(sample.time_to_first_token)
        self._queue_wait.labels(model_id).observe(stats.queue_seconds)
        self._prompt_eval.labels(model_id).observe(stats.prompt_eval_seconds)
        self._generation.labels(model_id).observe(stats.generation_seconds)

    def generation_failed(self, model_id: str, error: BaseException) -> None:
        kind = type(error).__name__
        for figures in (self._model(model_id), self._overall):
            figures.totals.errors += 1
            figures.totals.errors_by_type[kind] = figures.totals.errors_by_type.get(kind, 0) + 1
        self._errors.labels(model_id, kind).inc()

    def generation_cancelled(self, model_id: str) -> None:
        for figures in (self._model(model_id), self._overall):
            figures.totals.cancelled += 1
        self._cancelled.labels(model_id).inc()

    def model_loaded(self, model_id: str, seconds: float) -> None:
        for figures in (self._model(model_id), self._overall):
            figures.totals.loads += 1
            figures.totals.load_seconds += seconds
            figures.load_times.append(seconds)
        self._loads.labels(model_id).inc()
        self._load.labels(model_id).observe(seconds)

    def model_load_failed(self, model_id: str) -> None:
        for figures in (self._model(model_id), self._overall):
            figures.totals.load_failures += 1
        self._load_failures.labels(model_id).inc()

    def model_evicted(self, model_id: str) -> None:
        for figures in (self._model(model_id), self._overall):
            figures.totals.evictions += 1
        self._evictions.labels(model_id).inc()

    def model_expired(self, model_id: str) -> None:
        for figures in (self._model(model_id), self._overall):
            figures.totals.expirations += 1
        self._expirations.labels(model_id).inc()

    # --- reading --------------------------------------------------------------------------------
    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self._started

    def overall(self) -> ModelFigures:
        return self._overall

    def models(self) -> dict[str, ModelFigures]:
        return dict(self._models)

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)
