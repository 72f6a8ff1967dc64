"""The disconnect watch (api/disconnect.py): a client that goes away cancels the work where it waits, its cleanup
runs, and the request's task is left as it was (no cancellation pending for whatever runs next)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request
from starlette.types import Message

from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.errors import GenerationFailed

pytestmark = pytest.mark.unit

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}


def _client_leaving_after(seconds: float | None) -> tuple[asyncio.Event, object]:
    left = asyncio.Event()

    async def receive() -> Message:
        if seconds is None:
            await asyncio.Event().wait()  # a client that stays
        await asyncio.sleep(seconds or 0.0)
        left.set()
        return {"type": "http.disconnect"}

    return left, receive


async def test_a_stream_whose_client_leaves_is_cancelled_where_it_waits_and_ends_quietly() -> None:
    cleaned = asyncio.Event()
    sent: list[Message] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await asyncio.sleep(30)  # the model takes its time: the client leaves meanwhile
            yield b"never sent"
        finally:
            cleaned.set()

    async def send(message: Message) -> None:
        sent.append(message)

    left, receive = _client_leaving_after(0.05)
    await asyncio.wait_for(StreamedResponse(body())(SCOPE, receive, send), 5)  # type: ignore[arg-type]
    assert left.is_set() and cleaned.is_set()
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"] == [b"data: first\n\n"]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and no cancellation is left to land here


async def test_a_stream_that_ends_first_stops_its_watcher() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: all\n\n"

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    _left, receive = _client_leaving_after(None)
    before = len(asyncio.all_tasks())
    await StreamedResponse(body())(SCOPE, receive, send)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_work_whose_client_leaves_is_cancelled_and_reported() -> None:
    cleaned = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
            return "done"
        finally:
            cleaned.set()

    _left, receive = _client_leaving_after(0.05)
    with pytest.raises(GenerationFailed, match="the client disconnected"):
        await unless_disconnected(Request(SCOPE, receive), work())  # type: ignore[arg-type]
    assert cleaned.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_work_that_ends_first_is_returned() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    _left, receive = _client_leaving_after(None)
    assert await unless_disconnected(Request(SCOPE, receive), work()) == "done"  # type: ignore[arg-type]


async def test_a_cancellation_from_elsewhere_still_cancels() -> None:
    async def work() -> str:
        await asyncio.sleep(30)
        return "done"

    _left, receive = _client_leaving_after(None)
    waiting = asyncio.ensure_future(unless_disconnected(Request(SCOPE, receive), work()))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    waiting.cancel()  # a server shutting down, say
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_work_that_turns_the_cancellation_into_another_error_leaves_the_task_uncancelled() -> None:
    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("the backend's own error on the way out") from None
        return "done"

    _left, receive = _client_leaving_after(0.05)
    with pytest.raises(RuntimeError, match="on the way out"):
        await unless_disconnected(Request(SCOPE, receive), work())  # type: ignore[arg-type]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
