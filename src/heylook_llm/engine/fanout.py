"""Several generations at once: start them together (so a batching worker steps them in one decode) and
interleave their chunks as they arrive, each failure kept to its own generation.

Used by the generation plan (OpenAI's `n`, batch processing modes); nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from heylook_llm.engine.generation import ActiveGeneration
from heylook_llm.errors import HeylookError
from heylook_llm.types import GenerationChunk, GenerationRequest

Starter = Callable[[], Awaitable[ActiveGeneration]]
"""Starts one generation (and raises its domain error if the prompt is refused)."""


class StartGeneration(Protocol):
    """Starts generations of requests on the model these requests are for (see Engine.starter)."""

    capacity: int
    """Generations one model queues at once (max_queued_requests_per_model)."""

    async def __call__(self, request: GenerationRequest) -> ActiveGeneration:
        """One generation; raises its domain error if the prompt is refused."""
        ...

    async def all(self, requests: list[GenerationRequest], *, param: str | None = None) -> list[ActiveGeneration]:
        """Several generations admitted together; the first part that fails cancels the others and is raised."""
        ...

    async def each(
        self, requests: list[GenerationRequest], *, param: str | None = None
    ) -> list[ActiveGeneration | HeylookError]:
        """Several generations admitted together (or refused whole); a part that fails is returned as its error."""
        ...


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


def failed(error: HeylookError) -> Starter:
    """A starter for a part that was refused when it was admitted with others (`interleave` reports it)."""

    async def start() -> ActiveGeneration:
        raise error

    return start


def already_started(active: ActiveGeneration) -> Starter:
    """A starter for a generation started earlier (so that its prompt errors became an HTTP error)."""

    async def start() -> ActiveGeneration:
        return active

    return start
