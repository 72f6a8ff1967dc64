"""What the dashboard shows of recent work: the latest requests (a bounded history) and live figures per model
at one-second resolution over the last minutes (tokens/s, time to first token, queue depth, active sequences).

Both live on the `MetricsRecorder` (so on `app.state`, never module state) and are written on the event loop:
a `GenerationTrace` follows each generation from its start to its end; the engine's sampler closes one bucket of
live figures a second. Memory stays bounded: `HISTORY_SIZE` records, `LIVE_SECONDS` points per model.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from heylook_llm.types import FinishReason, GenerationRequest, GenerationStats

HISTORY_SIZE = 100
"""Requests kept for the dashboard's history table."""
LIVE_SECONDS = 300
"""Seconds of live figures kept per model (one point a second)."""

RequestStatus = str
"""How a generation ended: its finish reason ("stop", "length", "tool_calls"), "cancelled" or "error"."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One generation, as the history table shows it. Token counts the server did not learn are None (a request
    that failed before its prompt was read has no prompt count)."""

    sequence: int
    """Position in the order of recording (1, 2, ...): lets a stream send only what is new."""
    finished_at: float
    """Wall-clock time it ended."""
    model_id: str
    origin: str
    """The API dialect that made the request ("openai", "ollama"; "" when not said)."""
    request_id: str
    status: RequestStatus
    prompt_tokens: int | None
    completion_tokens: int
    cached_tokens: int | None
    ttft_seconds: float | None
    """From the request reaching the engine to its first output (load, queue and prompt evaluation included)."""
    duration_seconds: float
    error: str | None = None
    """The error's type name when `status` is "error"."""


class RequestHistory:
    """The latest `size` requests, oldest first."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=size)
        self._count = 0

    @property
    def count(self) -> int:
        """Records ever added (the sequence number of the newest)."""
        return self._count

    def add(
        self,
        *,
        model_id: str,
        origin: str,
        request_id: str,
        status: RequestStatus,
        prompt_tokens: int | None,
        completion_tokens: int,
        cached_tokens: int | None,
        ttft_seconds: float | None,
        duration_seconds: float,
        error: str | None = None,
    ) -> RequestRecord:
        self._count += 1
        record = RequestRecord(
            self._count,
            time.time(),
            model_id,
            origin,
            request_id,
            status,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            ttft_seconds,
            duration_seconds,
            error,
        )
        self._records.append(record)
        return record

    def records(self) -> list[RequestRecord]:
        return list(self._records)

    def after(self, sequence: int) -> list[RequestRecord]:
        """Records newer than `sequence`, oldest first."""
        return [r for r in self._records if r.sequence > sequence]


@dataclass(frozen=True, slots=True)
class LivePoint:
    """One second of one model."""

    time: float
    """Wall-clock time the second ended."""
    tokens_per_second: float
    """Tokens generated in this second (all of the model's sequences together)."""
    ttft_seconds: float | None
    """Mean time to first token of the requests whose first output came in this second; None: none did."""
    queued: int
    """Requests waiting for the model's worker when the second ended."""
    running: int
    """Sequences the worker was stepping when the second ended."""


@dataclass(slots=True)
class _Bucket:
    tokens: int = 0
    ttfts: list[float] = field(default_factory=list)


class LiveSeries:
    """Per-model live figures: events add to the open second's bucket; `sample` closes it once a second."""

    def __init__(self, seconds: int = LIVE_SECONDS) -> None:
        self.seconds = seconds
        self._points: dict[str, deque[LivePoint]] = {}
        self._open: dict[str, _Bucket] = {}
        self._latest: dict[str, LivePoint] = {}
        self._last_sample = time.monotonic()
        self._waiters: list[asyncio.Future[None]] = []

    # --- events (event loop) ----------------------------------------------------------------------
    def add_tokens(self, model_id: str, count: int) -> None:
        if count:
            self._bucket(model_id).tokens += count

    def add_first_token(self, model_id: str, seconds: float) -> None:
        self._bucket(model_id).ttfts.append(seconds)

    def _bucket(self, model_id: str) -> _Bucket:
        bucket = self._open.get(model_id)
        if bucket is None:
            bucket = self._open[model_id] = _Bucket()
        return bucket

    # --- sampling (the engine's once-a-second task) -----------------------------------------------
    def sample(self, states: Iterable[tuple[str, int, int]], now: float | None = None) -> dict[str, LivePoint]:
        """Close the open second. `states`: (model id, queued, running) of each loaded model. Models neither loaded
        nor active in this second get no point (the plot shows a gap)."""
        monotonic = time.monotonic()
        elapsed = max(monotonic - self._last_sample, 1e-3)
        self._last_sample = monotonic
        wall = time.time() if now is None else now
        open_buckets, self._open = self._open, {}
        counts = {model_id: (queued, running) for model_id, queued, running in states}
        points: dict[str, LivePoint] = {}
        for model_id in counts.keys() | open_buckets.keys():
            bucket = open_buckets.get(model_id, _Bucket())
            queued, running = counts.get(model_id, (0, 0))
            ttft = sum(bucket.ttfts) / len(bucket.ttfts) if bucket.ttfts else None
            point = LivePoint(wall, bucket.tokens / elapsed, ttft, queued, running)
            series = self._points.get(model_id)
            if series is None:
                series = self._points[model_id] = deque(maxlen=self.seconds)
            series.append(point)
            points[model_id] = point
        self._latest = points
        self._forget_old(wall)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return points

    def _forget_old(self, now: float) -> None:
        for model_id in [m for m, series in self._points.items() if series[-1].time < now - self.seconds]:
            del self._points[model_id]

    async def next_sample(self) -> None:
        """Wait until the next `sample()`."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def latest(self) -> dict[str, LivePoint]:
        """The points of the last sample, by model."""
        return dict(self._latest)

    def series(self) -> dict[str, list[LivePoint]]:
        """Each model's points, oldest first."""
        return {model_id: list(points) for model_id, points in sorted(self._points.items())}


class GenerationTrace:
    """Follows one generation for the dashboard: its first output (time to first token), the tokens it streams
    (live tokens/s) and how it ended (one history record). Every method runs on the event loop."""

    def __init__(self, history: RequestHistory, live: LiveSeries, model_id: str, request: GenerationRequest) -> None:
        self._history = history
        self._live = live
        self._model_id = model_id
        self._origin = request.origin
        self._request_id = request.request_id
        self._started = time.perf_counter()
        self._ttft: float | None = None
        self._tokens = 0
        self._ended = False

    def first_output(self) -> None:
        self._ttft = time.perf_counter() - self._started
        self._live.add_first_token(self._model_id, self._ttft)

    def tokens(self, count: int) -> None:
        self._tokens += count
        self._live.add_tokens(self._model_id, count)

    def finished(self, reason: FinishReason, stats: GenerationStats) -> None:
        # Chunks the worker dropped (a held-back stop prefix, half a character) carried tokens too: the final
        # count is exact, so the live figure catches up with it here.
        self._live.add_tokens(self._model_id, max(0, stats.completion_tokens - self._tokens))
        self._end(reason.value, stats.prompt_tokens, stats.completion_tokens, stats.cached_prompt_tokens)

    def failed(self, error: BaseException) -> None:
        self._end("error", None, self._tokens, None, error=type(error).__name__)

    def cancelled(self) -> None:
        self._end("cancelled", None, self._tokens, None)

    def _end(
        self,
        status: RequestStatus,
        prompt_tokens: int | None,
        completion_tokens: int,
        cached_tokens: int | None,
        *,
        error: str | None = None,
    ) -> None:
        if self._ended:
            return
        self._ended = True
        self._history.add(
            model_id=self._model_id,
            origin=self._origin,
            request_id=self._request_id,
            status=status,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            ttft_seconds=self._ttft,
            duration_seconds=time.perf_counter() - self._started,
            error=error,
        )
