"""The upstream client's HTTP layer (engine/upstream/http1.py) against scripted loopback peers: the
network behaviours real upstreams show only by chance (a stall, a kept-alive connection closed as it is reused, a
burst larger than the read buffer), made to happen every time."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import trustme

from heylook_llm.engine.upstream import http1
from heylook_llm.engine.upstream.client import Timeouts, UpstreamClient, UpstreamUnavailable
from heylook_llm.engine.upstream.replicas import Replica
from heylook_llm.errors import GenerationFailed, InvalidRequest
from heylook_llm.types import ChatMessage, FinishReason, GenerationChunk, GenerationRequest, SamplingParams

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def _request() -> GenerationRequest:
    return GenerationRequest("m", SamplingParams(max_tokens=8), messages=[ChatMessage("user", "Hello.")])


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request (headers and its Content-Length body); b"" when the peer closed first."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def _events(texts: list[str]) -> list[bytes]:
    events = [
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}) + b"\n\n"
        for t in texts
    ]
    events.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n')
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)}}
    events.append(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
    return events


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _answer(writer: asyncio.StreamWriter, events: list[bytes], pause: float = 0.0) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n\r\n"
    )
    for event in events:
        writer.write(_chunk(event))
        if pause:
            await writer.drain()
            await asyncio.sleep(pause)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _serve(handler: Handler) -> AsyncIterator[str]:
    connections = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await handler(reader, writer, connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def _serving(handler: Handler, pool: http1.Http1Pool | None = None) -> AsyncIterator[tuple[UpstreamClient, str]]:
    """An upstream client (with `pool` for its generations, if given) and the URL of a peer running `handler`."""
    client = UpstreamClient()
    if pool is not None:
        client.pool = pool
    try:
        async for base_url in _serve(handler):
            yield client, base_url
    finally:
        await client.close()


async def _generate(client: UpstreamClient, base_url: str, timeouts: Timeouts | None = None) -> list[GenerationChunk]:
    replica = Replica(0, base_url, "m", None)
    return [c async for c in client.stream("openai", replica, _request(), timeouts or Timeouts(5.0, 10.0))]


async def test_events_arrive_whole_however_the_network_splits_them(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"t{i} " for i in range(3000)]  # about 250 KB of events: many reads, and reads that split events
    # A low mark, so that the burst below stops and restarts the socket's reading many times.
    monkeypatch.setattr(http1, "_PAUSE_AT", 4096)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        events = _events(texts)
        # The first events one by one, the rest in one write larger than the reader's pause threshold.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in events[:5]:
            writer.write(_chunk(event[:7]))
            await writer.drain()
            writer.write(_chunk(event[7:]))
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.write(b"".join(_chunk(e) for e in events[5:]) + b"0\r\n\r\n")
        await writer.drain()

    async with _serving(handler) as (client, base_url):
        chunks = await _generate(client, base_url)
    assert "".join(c.text for c in chunks) == "".join(texts)
    last = chunks[-1]
    assert last.finish_reason is FinishReason.LENGTH
    assert last.stats is not None and last.stats.completion_tokens == len(texts)


async def test_a_silent_upstream_times_out_at_the_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        await asyncio.sleep(30)

    async with _serving(handler) as (client, base_url):
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable, match="timed out"):
            await _generate(client, base_url, Timeouts(5.0, 0.3))
        assert 0.25 <= time.monotonic() - started < 5.0


async def test_a_stall_mid_stream_times_out_too() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(_chunk(_events(["first"])[0]))
        await writer.drain()
        await asyncio.sleep(30)

    async with _serving(handler) as (client, base_url):
        stream = client.stream("openai", Replica(0, base_url, "m", None), _request(), Timeouts(5.0, 0.3))
        assert (await anext(stream)).text == "first"
        with pytest.raises(UpstreamUnavailable, match="failed while answering: it timed out"):
            await anext(stream)


async def test_a_refused_connection_is_reported_as_such() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        return None

    client = UpstreamClient()
    try:
        async for base_url in _serve(handler):
            closed = base_url
        # The server is closed now: nothing listens on its port.
        with pytest.raises(UpstreamUnavailable, match="cannot be reached: the connection failed"):
            await _generate(client, closed)
    finally:
        await client.close()


async def test_a_kept_alive_connection_closed_as_it_is_reused_is_retried_on_a_new_one() -> None:
    """llama-server's behaviour made certain: it says keep-alive, then closes the connection after a streamed answer;
    a request sent on it before the close arrives gets no answer, and must go again on a new connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        await _answer(writer, _events([f"c{n}"]))
        if n == 1:
            await _read_request(reader)  # the second request, on the kept-alive connection: closed unanswered

    async with _serving(handler) as (client, base_url):
        first = await _generate(client, base_url)
        second = await _generate(client, base_url)
    assert first[0].text == "c1"
    assert second[0].text == "c2"  # answered on a second connection


async def test_a_connection_cut_mid_stream_is_an_upstream_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(_chunk(_events(["first"])[0]))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with _serving(handler) as (client, base_url):
        stream = client.stream("openai", Replica(0, base_url, "m", None), _request(), Timeouts(5.0, 10.0))
        assert (await anext(stream)).text == "first"
        with pytest.raises(UpstreamUnavailable, match="failed while answering: the connection was closed"):
            await anext(stream)


async def test_a_server_that_keeps_connections_alive_answers_every_request_on_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for turn in range(3):
            await _read_request(reader)
            await _answer(writer, _events([f"c{n}-{turn}"]))
        await reader.read()

    async with _serving(handler) as (client, base_url):
        texts = [(await _generate(client, base_url))[0].text for _ in range(3)]
    assert texts == ["c1-0", "c1-1", "c1-2"]  # one connection, three answers


async def test_an_answer_that_says_close_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        body = b"".join(_events([f"c{n}"]))
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()  # the client closes it

    async with _serving(handler) as (client, base_url):
        texts = [(await _generate(client, base_url))[0].text for _ in range(2)]
    assert texts == ["c1", "c2"]


async def test_an_error_answer_with_a_body_reaches_the_caller_as_the_upstream_said_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        body = orjson.dumps({"error": {"message": "context length exceeded", "param": "messages"}})
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()

    async with _serving(handler) as (client, base_url):
        with pytest.raises(InvalidRequest, match="answered 400: context length exceeded") as caught:
            await _generate(client, base_url)
    assert caught.value.param == "messages"


async def test_an_answer_that_is_not_http_is_a_clear_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        await reader.read()

    async with _serving(handler) as (client, base_url):
        with pytest.raises(UpstreamUnavailable, match=r"not valid HTTP/1\.1"):
            await _generate(client, base_url)


async def test_idle_connections_past_their_expiry_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _read_request(reader):
            await _answer(writer, _events([f"c{n}"]))

    async with _serving(handler, http1.Http1Pool(idle_seconds=0.05)) as (client, base_url):
        first = await _generate(client, base_url)
        second = await _generate(client, base_url)  # reused: within the expiry
        await asyncio.sleep(0.1)
        third = await _generate(client, base_url)
    assert [first[0].text, second[0].text, third[0].text] == ["c1", "c1", "c2"]


async def test_a_server_that_closes_after_each_answer_gets_a_spare_connection_opened_in_advance() -> None:
    """llama-server's way: the connection closed after every streamed answer. The pool connects again as soon as
    the close arrives, so the next request is sent at once, without a handshake on its path; a spare that the
    server closes in turn (an idle timeout) is not replaced, or the two would reconnect forever."""
    opened: list[int] = []
    idle_closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        opened.append(n)
        if n == 3:
            await asyncio.sleep(0.05)  # the third connection is a spare: closed as a server's idle timeout would
            idle_closed.set()
            return
        await _read_request(reader)
        await _answer(writer, _events([f"c{n}"]))

    async with _serving(handler) as (client, base_url):
        first = await _generate(client, base_url)
        await asyncio.sleep(0.1)
        assert opened == [1, 2]  # the spare, opened before any second request
        second = await _generate(client, base_url)
        await idle_closed.wait()
        await asyncio.sleep(0.2)
        assert opened == [1, 2, 3]  # the spare closed unused was not replaced
    assert first[0].text == "c1"
    assert second[0].text == "c2"


def test_request_heads_name_the_host_as_http_wants_it() -> None:
    target = http1.Target.of("http://[::1]:8000/v1/chat/completions?x=1", "POST", [("Accept", "*/*")])
    assert target.origin == http1.Origin("http", "::1", 8000)
    assert target.head == b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: [::1]:8000\r\nAccept: */*\r\n"
    default_port = http1.Target.of("https://gpu-box/v1/models", "GET", [])
    assert default_port.origin == http1.Origin("https", "gpu-box", 443)
    assert default_port.head == b"GET /v1/models HTTP/1.1\r\nHost: gpu-box\r\n"


async def test_a_key_that_would_split_the_request_head_is_refused_before_sending() -> None:
    client = UpstreamClient()
    try:
        replica = Replica(0, "http://127.0.0.1:9/v1", "m", "sk-1\r\nX-Injected: yes")
        with pytest.raises(GenerationFailed, match="settings are invalid: a URL or header value holds a line break"):
            _ = [c async for c in client.stream("openai", replica, _request(), Timeouts(5.0, 10.0))]
    finally:
        await client.close()


async def test_connections_this_side_closes_are_not_replaced() -> None:
    """Only the server's close after an answer opens a spare: idle connections the pool drops itself (over its
    limit, or at shutdown) are gone for good."""
    opened: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        opened.append(n)
        while await _read_request(reader):
            await _answer(writer, _events([f"c{n}"]))

    async with _serving(handler, http1.Http1Pool(max_idle_per_origin=1)) as (client, base_url):
        # Two streams at once: two connections, of which the pool keeps one when both are done.
        await asyncio.gather(*(_generate(client, base_url) for _ in range(2)))
        await asyncio.sleep(0.2)
        assert opened == [1, 2]
        assert (await _generate(client, base_url))[0].text in ("c1", "c2")  # on the connection kept
        assert opened == [1, 2]


async def test_an_upstream_that_switches_protocols_is_a_clear_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxx")
        await writer.drain()
        await reader.read()

    async with _serving(handler) as (client, base_url):
        with pytest.raises(UpstreamUnavailable, match="answered 101 instead of a response"):
            await _generate(client, base_url, Timeouts(5.0, 2.0))


async def test_https_upstreams_are_verified_and_kept_alive() -> None:
    """https over asyncio's TLS transport: the server's certificate is checked against the pool's roots (here a
    throwaway authority), the stream arrives, and the connection is kept for the next request."""
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    authority.configure_trust(client_tls)
    opened: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(len(opened) + 1)
        n = len(opened)
        try:
            while await _read_request(reader):
                await _answer(writer, _events([f"tls{n}"]))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    base_url = f"https://localhost:{port}/v1"
    trusting, default_roots = UpstreamClient(), UpstreamClient()
    trusting.pool = http1.Http1Pool(tls=client_tls)
    try:
        texts = [(await _generate(trusting, base_url))[0].text for _ in range(2)]
        # The same server with the default roots: its certificate is not trusted, and that is a connection failure.
        with pytest.raises(UpstreamUnavailable, match="cannot be reached: the connection failed"):
            await _generate(default_roots, base_url)
    finally:
        await trusting.close()
        await default_roots.close()
        server.close()
    assert texts == ["tls1", "tls1"]
