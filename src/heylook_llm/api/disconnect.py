"""Stop work for a non-streaming request when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from heylook_llm.errors import GenerationFailed

T = TypeVar("T")


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it (its `finally` blocks free the model).

    Wrap the start of a generation too, not only its reading: a request waiting in a model's queue is then dropped
    before its prompt is evaluated when its client goes away.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        # Let the work's cleanup (cancel the queued request, release the model) run before answering.
        with contextlib.suppress(BaseException):
            await task
        raise GenerationFailed("the client disconnected")
    return task.result()
