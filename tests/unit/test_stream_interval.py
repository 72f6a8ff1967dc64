"""GenerationStream: tokens pushed faster than the stream interval reach the loop merged, and none wait long."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from heylook_llm.engine.worker import GenerationStream, wake_streams
from heylook_llm.errors import GenerationFailed
from heylook_llm.types import FinishReason, GenerationChunk

pytestmark = pytest.mark.unit


def _token(text: str) -> GenerationChunk:
    return GenerationChunk(text, token_count=1)


async def _next(stream: GenerationStream) -> GenerationChunk:
    async with asyncio.timeout(2.0):
        return await anext(stream)


async def test_tokens_within_the_interval_arrive_as_one_chunk_after_the_first() -> None:
    stream = GenerationStream(asyncio.get_running_loop(), interval=0.2)
    stream.push(_token("a"))
    first = await _next(stream)
    assert (first.text, first.token_count) == ("a", 1)
    waiting = asyncio.ensure_future(_next(stream))
    await asyncio.sleep(0.01)
    for piece in "bcd":
        stream.push(_token(piece))
    # Held: no wake-up is scheduled within the interval, so the waiting reader is not woken.
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert stream.due(time.perf_counter(), horizon=float("inf"))
    wake_streams([stream])
    merged = await waiting
    assert (merged.text, merged.token_count) == ("bcd", 3)


async def test_the_last_chunk_is_sent_at_once_with_the_held_ones() -> None:
    stream = GenerationStream(asyncio.get_running_loop(), interval=10.0)
    stream.push(_token("a"))
    await _next(stream)
    stream.push(_token("b"))
    stream.push(GenerationChunk("c", token_count=1, finish_reason=FinishReason.LENGTH))
    last = await _next(stream)
    assert (last.text, last.token_count, last.finish_reason) == ("bc", 2, FinishReason.LENGTH)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_an_error_is_sent_at_once() -> None:
    stream = GenerationStream(asyncio.get_running_loop(), interval=10.0)
    stream.push(_token("a"))
    await _next(stream)
    stream.push(_token("b"))
    stream.push(GenerationFailed("boom"))
    held = await _next(stream)
    assert held.text == "b"
    with pytest.raises(GenerationFailed, match="boom"):
        await _next(stream)


async def test_flush_waits_until_the_interval_would_pass() -> None:
    stream = GenerationStream(asyncio.get_running_loop(), interval=0.5)
    stream.push(_token("a"))
    await _next(stream)
    waiting = asyncio.ensure_future(_next(stream))
    await asyncio.sleep(0.01)
    stream.push(_token("b"))
    assert not stream.due(time.perf_counter(), horizon=0.0)  # the next step is quick: keep holding
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert stream.due(time.perf_counter(), horizon=1.0)  # the next step would pass the interval: send now
    wake_streams([stream])
    assert (await waiting).text == "b"


async def test_a_worker_thread_pushing_fast_sends_fewer_chunks_than_tokens() -> None:
    stream = GenerationStream(asyncio.get_running_loop(), interval=0.005)
    count = 2000

    def produce() -> None:
        for i in range(count - 1):
            stream.push(_token("x"))
            if i % 50 == 0 and stream.due(time.perf_counter(), horizon=0.0):
                wake_streams([stream])
        stream.push(GenerationChunk("x", token_count=1, finish_reason=FinishReason.LENGTH))

    thread = threading.Thread(target=produce)
    thread.start()
    chunks = [chunk async for chunk in stream]
    thread.join()
    assert sum(c.token_count for c in chunks) == count
    assert "".join(c.text for c in chunks) == "x" * count
    assert len(chunks) < count / 4


async def test_interval_zero_sends_every_token_while_the_loop_keeps_up() -> None:
    stream = GenerationStream(asyncio.get_running_loop(), interval=0.0)
    for piece in "abc":
        stream.push(_token(piece))
        assert (await _next(stream)).text == piece
