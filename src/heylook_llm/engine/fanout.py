"""Several generations at once: submit them together (so a batching worker steps them in one decode), collect
their results with each failure kept to its own generation, or interleave their chunks as they arrive.

Used for OpenAI's `n`, batch processing modes and prompt lists; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from heylook_llm.engine.router import ActiveGeneration
from heylook_llm.errors import HeylookError
from heylook_llm.types import FinishReason, GenerationChunk, GenerationRequest, GenerationStats

Starter = Callable[[], Awaitable[ActiveGeneration]]
"""Starts one generation (and raises its domain error if the prompt is refused)."""

StartGeneration = Callable[[GenerationRequest], Awaitable[ActiveGeneration]]
"""Starts a generation of a request on the model these requests are for (see Engine.starter)."""


@dataclass(slots=True)
class Finished:
    """One generation's whole result, with wall-clock times for batch timing."""

    text: str
    finish_reason: FinishReason | None
    stats: GenerationStats
    started: float
    """`time.perf_counter()` when it was submitted."""
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


Outcome = Finished | HeylookError
"""A generation's result, or the domain error that ended it (other exceptions propagate)."""


async def collect(active: ActiveGeneration, started: float) -> Finished:
    """Read a started generation to its end and close it."""
    parts: list[str] = []
    try:
        async for chunk in active.chunks():
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                stats = chunk.stats or GenerationStats()
                return Finished("".join(parts), chunk.finish_reason, stats, started, time.perf_counter())
    finally:
        active.close()
    raise AssertionError("a generation ended without a finish reason")


async def run_one(start: StartGeneration, request: GenerationRequest) -> Outcome:
    started = time.perf_counter()
    try:
        active = await start(request)
        return await collect(active, started)
    except HeylookError as exc:
        return exc


async def run_together(start: StartGeneration, requests: list[GenerationRequest]) -> list[Outcome]:
    """Submit every request at once and wait for all; one failing leaves the others running to their end."""
    results = await asyncio.gather(*(run_one(start, r) for r in requests), return_exceptions=True)
    outcomes: list[Outcome] = []
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, HeylookError):
            raise result
        outcomes.append(result)
    return outcomes


@dataclass(slots=True)
class Piece:
    """A chunk of generation `index`, or the error that ended it (then `chunk` is None)."""

    index: int
    chunk: GenerationChunk | None
    error: HeylookError | None = None


_DONE = object()


async def interleave(starters: list[Starter]) -> AsyncGenerator[Piece, None]:
    """Start every generation at once and yield their chunks in arrival order, tagged with their index.

    A generation that fails yields one `Piece` with its error and stops; the others go on. Closing the iterator
    early (the client went away) cancels every generation still running.
    """
    pieces: asyncio.Queue[Piece | object] = asyncio.Queue()

    async def pump(index: int, start: Starter) -> None:
        active: ActiveGeneration | None = None
        try:
            active = await start()
            async for chunk in active.chunks():
                pieces.put_nowait(Piece(index, chunk))
        except HeylookError as exc:
            pieces.put_nowait(Piece(index, None, exc))
        finally:
            if active is not None:
                active.close()
            pieces.put_nowait(_DONE)

    tasks = [asyncio.create_task(pump(i, start), name=f"generation-{i}") for i, start in enumerate(starters)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await pieces.get()
            if item is _DONE:
                remaining -= 1
                continue
            assert isinstance(item, Piece)
            yield item
        # Surface a bug in a pump (not a domain error) instead of hiding it.
        for task in tasks:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def started(start: StartGeneration, request: GenerationRequest) -> Starter:
    """A starter for `interleave` that submits `request`."""

    async def begin() -> ActiveGeneration:
        return await start(request)

    return begin


def already_started(active: ActiveGeneration) -> Starter:
    """A starter for a generation started earlier (so that its prompt errors became an HTTP error)."""

    async def start() -> ActiveGeneration:
        return active

    return start
