"""One worker thread owns each loaded model; requests reach it through a queue.

Tokens travel back to the event loop through each request's deque, with one `loop.call_soon_threadsafe` per
step for all streams that need a wake-up and no thread-pool hop per token. The loop is shaped for several
active sequences at once: admit new requests between steps, step them all together, retire finished or
cancelled ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from heylook_llm.backends.base import Backend
from heylook_llm.backends.native_memory import release_free_heap
from heylook_llm.engine.threads import ThreadHost
from heylook_llm.errors import GenerationFailed, HeylookError, ModelLoadError
from heylook_llm.types import EmbeddingInputs, EmbeddingResult, GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class GenerationStream:
    """The event-loop side of one generation: an async iterator of chunks, cancellable from the loop.

    The worker appends to a deque and wakes the loop only when no wake-up is already pending, so a fast model
    costs one loop wake-up per batch of tokens rather than per token. Each `__anext__` returns everything that
    arrived since the last one as a single chunk: one token while the client keeps up, several when it lags.

    `interval` (seconds) is the least time between two wake-ups while tokens come faster than that: the first
    token, the last one and errors go at once, the others wait at most `interval` (the worker calls
    `due` after each step). Past a few hundred tokens a second per stream, every per-chunk cost (a loop
    wake-up, an SSE event, the client's parsing) would otherwise be paid per token and slow the model itself.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = 0.0,
        on_cancel: Callable[[GenerationStream], None] | None = None,
    ) -> None:
        self.loop = loop
        self._on_cancel = on_cancel
        self._interval = interval
        self._items: deque[GenerationChunk | BaseException] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._last_wake = 0.0
        self._held = False
        self._ready = asyncio.Event()
        self._cancel = threading.Event()
        self._done = False
        self.submitted_at = time.perf_counter()

    # --- worker-thread side -------------------------------------------------------------------
    def push(self, item: GenerationChunk | BaseException) -> None:
        if self.offer(item):
            wake_streams([self])

    def offer(self, item: GenerationChunk | BaseException) -> bool:
        """Queue `item`; True when the loop must be woken for it (the caller then calls `wake_streams`)."""
        urgent = isinstance(item, BaseException) or item.finish_reason is not None
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return False
            now = time.perf_counter()
            if not urgent and now - self._last_wake < self._interval:
                self._held = True
                return False
            self._wake_pending = True
            self._held = False
            self._last_wake = now
        return True

    def due(self, now: float, horizon: float) -> bool:
        """True (and the wake-up counted as sent) when held tokens would otherwise wait past the interval
        `horizon` seconds from now; the caller then calls `wake_streams`."""
        with self._lock:
            if not self._held or self._wake_pending or now + horizon - self._last_wake < self._interval:
                return False
            self._wake_pending = True
            self._held = False
            self._last_wake = now
        return True

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # --- event-loop side ----------------------------------------------------------------------
    def wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    def cancel(self) -> None:
        if self._cancel.is_set():
            return
        self._cancel.set()
        if self._on_cancel is not None:
            self._on_cancel(self)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> GenerationChunk:
        if self._done:
            raise StopAsyncIteration
        while True:
            with self._lock:
                if self._items:
                    item = self._take()
                    break
                self._ready.clear()
            await self._ready.wait()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    def _take(self) -> GenerationChunk | BaseException:
        """Everything queued, merged into one chunk (text, reasoning, tool-call pieces, token ids and logprobs
        all kept, in order); an error stands alone."""
        first = self._items.popleft()
        if isinstance(first, BaseException) or first.finish_reason is not None:
            return first
        merged = first
        while self._items and not isinstance(self._items[0], BaseException):
            chunk = self._items.popleft()
            assert not isinstance(chunk, BaseException)
            merged.absorb(chunk)
            if chunk.finish_reason is not None:
                break
        return merged


def wake_streams(streams: list[GenerationStream]) -> None:
    """Wake the event loop once for all `streams` (one loop callback per step rather than one per token)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[GenerationStream]] = {}
    for stream in streams:
        by_loop.setdefault(stream.loop, []).append(stream)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake_each, group)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            for stream in group:
                stream.cancel()


def _wake_each(streams: list[GenerationStream]) -> None:
    for stream in streams:
        stream.wake()


@dataclass(slots=True)
class _GenerateJob:
    request: GenerationRequest
    stream: GenerationStream


@dataclass(slots=True)
class _CallJob:
    fn: Callable[[Backend], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Active:
    job: _GenerateJob
    handle: Any
    """The backend's sequence handle."""
    queue_seconds: float
    first_sent: bool = False
    tokens_seen: int = 0


class _Stop:
    pass


class ModelWorker:
    """Owns a backend on its own thread: loading, generation, embeddings and unloading all run there."""

    def __init__(
        self, backend: Backend, max_parallel: int = 1, stream_interval: float = 0.0, threads: ThreadHost | None = None
    ) -> None:
        self.backend = backend
        self.model_id = backend.entry.id
        self.max_parallel = max_parallel
        self.stream_interval = stream_interval
        """Least seconds between two chunks of one stream while tokens come faster (see GenerationStream)."""
        self._last_step_seconds = 0.0
        self._jobs: queue.SimpleQueue[_GenerateJob | _CallJob | _Stop] = queue.SimpleQueue()
        self._threads = threads if threads is not None else ThreadHost()
        self._finished: threading.Event | None = None
        """Set once the worker's loop has ended and its thread is back with the host (None before `start`)."""
        self._pending_lock = threading.Lock()
        self._live: set[GenerationStream] = set()
        """Streams queued or running: they count against the queue limit until retired."""
        self._admitted: set[GenerationStream] = set()
        """Those of `_live` that the worker took from the queue (a prompt may be evaluating)."""
        self._active: list[_Active] = []
        self.load_seconds = 0.0

    @property
    def pending(self) -> int:
        """Generations queued or running on this worker."""
        return len(self._live)

    @property
    def running(self) -> int:
        """Generations being stepped now (the rest of `pending` waits in the queue)."""
        return len(self._active)

    async def start(self) -> None:
        """Start the thread and load the model on it; raises ModelLoadError."""
        self._finished = self._threads.run(self._run, f"model-{self.model_id}")
        started = time.perf_counter()
        try:
            await self.call(lambda backend: backend.load())
        except HeylookError:
            await self.stop()
            raise
        except Exception as exc:
            await self.stop()
            log.error("loading %s failed", self.model_id, exc_info=exc)
            raise ModelLoadError(self.model_id, str(exc) or "the backend failed without a message") from exc
        self.load_seconds = time.perf_counter() - started

    async def call(self, fn: Callable[[Backend], T]) -> T:
        """Run `fn(backend)` on the worker thread between generation steps."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_CallJob(fn, loop, future))
        return await future

    async def embed(self, inputs: EmbeddingInputs) -> EmbeddingResult:
        return await self.call(lambda backend: backend.embed(inputs))

    def submit(self, request: GenerationRequest) -> GenerationStream:
        stream = GenerationStream(asyncio.get_running_loop(), self.stream_interval, on_cancel=self._forget_queued)
        with self._pending_lock:
            self._live.add(stream)
        self._jobs.put(_GenerateJob(request, stream))
        return stream

    def fail_all(self, exc: HeylookError) -> int:
        """End every queued and running generation with `exc` (shutdown); the worker stops them within a step.
        Returns how many were ended."""
        with self._pending_lock:
            streams = list(self._live)
        for stream in streams:
            stream.push(exc)
            stream.cancel()
        return len(streams)

    def _forget_queued(self, stream: GenerationStream) -> None:
        """A request cancelled while it waits in the queue (its client went away, a sibling prompt failed) stops
        counting against the queue limit at once; the worker drops it unread when it reaches it."""
        with self._pending_lock:
            if stream not in self._live or stream in self._admitted:
                return
            self._live.discard(stream)
        log.info("a request queued on '%s' was cancelled before its prompt was evaluated: dropped", self.model_id)

    def _take_queued(self, stream: GenerationStream) -> bool:
        """Mark a queued stream as admitted; False when it was cancelled (and forgotten) while it waited."""
        with self._pending_lock:
            if stream not in self._live or stream.cancelled:
                self._live.discard(stream)
                return False
            self._admitted.add(stream)
            return True

    async def stop(self) -> None:
        """Unload the model and end the thread; waits for the thread without blocking the loop."""
        finished = self._finished
        if finished is None or finished.is_set():
            return
        self._jobs.put(_Stop())
        await asyncio.to_thread(finished.wait)

    # --- worker thread ------------------------------------------------------------------------
    def _run(self) -> None:
        active = self._active
        try:
            while self._admit(active):
                if active:
                    self._step(active)
        finally:
            for item in active:
                self._close(item)
                item.job.stream.push(GenerationFailed("the model was unloaded during generation"))
            self._drain_after_stop()
            try:
                self.backend.unload()
            except Exception:
                log.exception("unloading %s failed", self.model_id)
            gc.collect()
            # After the collection, when the model's Python objects are gone too: glibc keeps freed heap pages
            # resident until trimmed, which makes RSS creep from one load to the next.
            release_free_heap()

    def _admit(self, active: list[_Active]) -> bool:
        """Take queued jobs between steps; blocks only while nothing is active. False when told to stop."""
        while len(active) < self.backend.max_parallel:
            try:
                job = self._jobs.get(block=not active)
            except queue.Empty:
                return True
            if isinstance(job, _Stop):
                return False
            if isinstance(job, _CallJob):
                self._run_call(job)
                continue
            if not self._take_queued(job.stream):
                continue
            started = time.perf_counter()
            # The next steps evaluate this prompt and may take long: send what the others have held back.
            self._flush_held(active, horizon=float("inf"))
            try:
                handle = self.backend.open_sequence(job.request)
            except Exception as exc:
                self._fail(job.stream, exc)
                self._retire(job.stream)
                continue
            active.append(_Active(job, handle, queue_seconds=started - job.stream.submitted_at))
        return True

    def _step(self, active: list[_Active]) -> None:
        """Advance every active sequence by one token (one backend step) and retire the ones that ended."""
        for item in [a for a in active if a.job.stream.cancelled]:
            log.info(
                "request %s on '%s' cancelled after %d tokens",
                item.job.request.request_id or "-",
                self.model_id,
                item.tokens_seen,
            )
            self._end(active, item)
        if not active:
            return
        started = time.perf_counter()
        try:
            results = self.backend.step([a.handle for a in active])
        except Exception as exc:
            for item in list(active):
                self._fail(item.job.stream, exc)
                self._end(active, item)
            return
        wake: list[GenerationStream] = []
        for item, result in zip(list(active), results, strict=True):
            if result is None:
                continue
            stream = item.job.stream
            if isinstance(result, BaseException):
                self._fail(stream, result)
                self._end(active, item)
                continue
            item.tokens_seen += 1
            if result.finish_reason is not None:
                if result.stats is not None:
                    result.stats.queue_seconds = item.queue_seconds
                if stream.offer(result):
                    wake.append(stream)
                self._end(active, item)
            # Empty pieces (a held-back stop prefix, half a UTF-8 character) are dropped, except the first,
            # which tells the API that the prompt was accepted so that it may start the response, and those
            # carrying their token's log probability.
            elif result.text or result.logprobs or not item.first_sent:
                item.first_sent = True
                if stream.offer(result):
                    wake.append(stream)
        now = time.perf_counter()
        self._last_step_seconds = now - started
        # Held tokens that would wait past the interval if the next step is as long as this one go now.
        wake.extend(self._due_streams(active, now, self._last_step_seconds))
        if wake:
            wake_streams(wake)

    def _due_streams(self, active: list[_Active], now: float, horizon: float) -> list[GenerationStream]:
        if self.stream_interval <= 0:
            return []
        return [item.job.stream for item in active if item.job.stream.due(now, horizon)]

    def _flush_held(self, active: list[_Active], horizon: float) -> None:
        due = self._due_streams(active, time.perf_counter(), horizon)
        if due:
            wake_streams(due)

    def _end(self, active: list[_Active], item: _Active) -> None:
        active.remove(item)
        self._close(item)
        self._retire(item.job.stream)

    def _close(self, item: _Active) -> None:
        try:
            self.backend.close_sequence(item.handle)
        except Exception:
            log.exception("closing a sequence on %s failed", self.model_id)

    def _retire(self, stream: GenerationStream) -> None:
        with self._pending_lock:
            self._live.discard(stream)
            self._admitted.discard(stream)

    def _fail(self, stream: GenerationStream, exc: BaseException) -> None:
        if isinstance(exc, HeylookError):
            stream.push(exc)
        else:
            # The exception's text may hold paths and internals: the log keeps it, the client gets a plain reason.
            log.error("generation on %s failed", self.model_id, exc_info=exc)
            stream.push(GenerationFailed("generation failed in the model's backend (the server log has the details)"))

    def _run_call(self, job: _CallJob) -> None:
        try:
            result = job.fn(self.backend)
        except BaseException as exc:
            self._resolve(job, None, exc)
        else:
            self._resolve(job, result, None)

    @staticmethod
    def _resolve(job: _CallJob, result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if job.future.cancelled():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(settle)

    def _drain_after_stop(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _GenerateJob):
                job.stream.push(GenerationFailed("the model was unloaded before the request started"))
            elif isinstance(job, _CallJob):
                self._resolve(job, None, GenerationFailed("the model was unloaded"))
