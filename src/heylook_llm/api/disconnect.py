"""Stop a request's work when its client goes away: while the generation starts, while a whole answer is collected,
and while an answer streams.

One watcher task per phase waits for the client's `http.disconnect` and cancels the request's own task, so the work
runs in that task and its `finally` blocks (cancel the queued request, release the model, close the upstream stream)
run before anything else. Starlette's StreamingResponse does the same with an anyio task group per response: two
tasks, a cancel scope and, when the stream ends, a cancellation message that formats the task's repr, about a tenth
of a proxied request's CPU (benchmarks/README.md, "Proxy overhead").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from heylook_llm.errors import GenerationFailed

T = TypeVar("T")


class _Watch:
    __slots__ = ("finished", "gone")

    def __init__(self) -> None:
        self.gone = False
        self.finished = False


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[object], watch: _Watch) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    # The watched task is suspended whenever this runs, so `finished` cannot change between this check and the
    # cancellation reaching the task's current await.
    if not watch.finished:
        watch.gone = True
        task.cancel()


def _watching(receive: Receive) -> tuple[asyncio.Task[object], asyncio.Task[None], _Watch]:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a request is always served in a task")
    watch = _Watch()
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(receive, task, watch))
    return task, watcher, watch


def _stop_watching(task: asyncio.Task[object], watcher: asyncio.Task[None], watch: _Watch) -> None:
    watch.finished = True
    watcher.cancel()
    if watch.gone:
        # Take back the cancellation the watcher asked for (also when the work turned it into another error), so
        # that nothing later in the request's task sees it as cancelled.
        task.uncancel()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, it is cancelled and GenerationFailed is raised.

    Wrap the start of a generation too, not only its reading: a request waiting in a model's queue is then dropped
    before its prompt is evaluated when its client goes away.
    """
    task, watcher, watch = _watching(request.receive)
    try:
        return await work
    except asyncio.CancelledError:
        if not watch.gone:
            raise
        raise GenerationFailed("the client disconnected") from None
    finally:
        _stop_watching(task, watcher, watch)


class StreamedResponse(StreamingResponse):
    """Starlette's StreamingResponse, with the disconnect watch above instead of a task group: when the client goes
    away the body's generator is cancelled where it waits, and the response ends quietly."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        task, watcher, watch = _watching(receive)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            return
        except OSError:
            return  # an ASGI 2.4 server's `send` after the client went away: nothing left to answer
        finally:
            _stop_watching(task, watcher, watch)
        if self.background is not None:
            await self.background()
