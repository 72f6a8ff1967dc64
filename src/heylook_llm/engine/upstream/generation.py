"""A generation running on an upstream server, behind the same `ActiveGeneration` interface as a local one, so that
every dialect encodes it unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from heylook_llm.engine.activity import GenerationTrace
from heylook_llm.engine.generation import ActiveGeneration
from heylook_llm.engine.metrics import MetricsRecorder
from heylook_llm.engine.output import PassThrough
from heylook_llm.engine.upstream.client import UpstreamUnavailable
from heylook_llm.engine.upstream.replicas import Replica
from heylook_llm.errors import GenerationFailed, HeylookError
from heylook_llm.types import GenerationChunk, GenerationStats


class UpstreamGeneration(ActiveGeneration):
    """Chunks come already parsed (the upstream separated tool calls and reasoning), so the parser passes them
    through. `close()` stays synchronous: it frees the replica at once and closes the HTTP stream in a task.

    `ActiveGeneration.__init__` is not called: it takes a router lease and a worker stream, which an upstream
    generation does not have; every method that uses them is overridden here.
    """

    def __init__(
        self,
        model_id: str,
        replica: Replica,
        stream: AsyncGenerator[GenerationChunk, None],
        first: GenerationChunk,
        trace: GenerationTrace,
        metrics: MetricsRecorder,
        closing: Callable[[AsyncGenerator[GenerationChunk, None]], None],
    ) -> None:
        self.first = first
        self.parser = PassThrough()
        self._model_id = model_id
        self._replica = replica
        self._upstream = stream
        self._trace = trace
        self._metrics = metrics
        self._closing = closing
        self._ended = False
        self._released = False
        self._stopped: HeylookError | None = None
        self.on_release: Callable[[UpstreamGeneration], None] = _nothing

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        chunk = self.first
        while True:
            self._trace.tokens(chunk.token_count)
            if chunk.finish_reason is not None and not self._ended:
                self._ended = True
                stats = chunk.stats if chunk.stats is not None else GenerationStats()
                chunk.stats = stats
                self._metrics.generation_finished(self._model_id, stats)
                self._trace.finished(chunk.finish_reason, stats)
                self._release()
            yield chunk
            if chunk.finish_reason is not None:
                return
            if self._stopped is not None:
                self._fail(self._stopped)
                self._closing(self._upstream)
                raise self._stopped
            try:
                chunk = await anext(self._upstream)
            except StopAsyncIteration:
                self._fail(GenerationFailed(f"the upstream ({self._replica.name}) ended its answer early"))
                raise GenerationFailed(f"the upstream ({self._replica.name}) ended its answer early") from None
            except Exception as exc:
                if isinstance(exc, UpstreamUnavailable):
                    self._replica.failed(exc.message)
                self._fail(exc)
                raise

    def _fail(self, exc: Exception) -> None:
        self._ended = True
        self._metrics.generation_failed(self._model_id, exc)
        self._trace.failed(exc)
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._replica.ended()
            self.on_release(self)

    def stop(self, error: HeylookError) -> None:
        """End the generation with `error` at its next chunk (the shutdown drain); its stream then carries the
        dialect's error event."""
        self._stopped = error

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._metrics.generation_cancelled(self._model_id)
            self._trace.cancelled()
        self._release()
        self._closing(self._upstream)


def _nothing(_generation: UpstreamGeneration) -> None:
    return None


def close_later(tasks: set[asyncio.Task[None]]) -> Callable[[AsyncGenerator[GenerationChunk, None]], None]:
    """A closer that ends an upstream stream (its HTTP response) in a task kept in `tasks` until it is done."""

    async def close(stream: AsyncGenerator[GenerationChunk, None]) -> None:
        # A stream still being read elsewhere cannot be closed; it ends when that read is cancelled.
        with contextlib.suppress(RuntimeError):
            await stream.aclose()

    def schedule(stream: AsyncGenerator[GenerationChunk, None]) -> None:
        task = asyncio.get_running_loop().create_task(close(stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return schedule
