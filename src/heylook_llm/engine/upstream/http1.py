"""Streamed HTTP/1.1 exchanges with upstream servers: kept-alive connections per origin on plain asyncio, responses
parsed as they arrive by httptools (llhttp, the C parser uvicorn reads our own requests with).

A proxy pays its HTTP client's cost once per request and once per streamed token. httpcore parses with h11, in pure
Python: per one-token request it cost 0.7-1.1 ms of CPU against 0.14 ms for the socket work alone, and about 60 us
per streamed event (benchmarks/README.md, "Proxy overhead"). Here a connection is an `asyncio.Protocol` that feeds
each received block to the parser; the parser's callbacks collect the status, the headers and the body's pieces
(chunked framing removed), and a reader waiting for them is woken once per block. TLS (https upstreams) is the
same protocol over asyncio's TLS transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 1 << 20
"""Received body bytes waiting to be read at which the socket stops being read (TCP then slows the sender); it is
read again when the reader has taken them."""


class HttpError(Exception):
    """An exchange with the upstream failed (subclasses say how); the message is fit for a client."""


class ConnectFailed(HttpError):
    pass


class TimedOut(HttpError):
    pass


class ConnectionClosed(HttpError):
    pass


class ProtocolError(HttpError):
    pass


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint and the fixed part of its requests' head, built once: each request adds its Content-Length."""

    origin: Origin
    head: bytes

    @classmethod
    def of(cls, url: str, method: str, headers: list[tuple[str, str]]) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 address
        default = (parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host if default else f'{host}:{port}'}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if any(c in line for line in lines for c in "\r\n\0"):
            raise ValueError("a URL or header value holds a line break")  # it would split the request's head
        try:
            head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"a URL or header value is not plain ASCII/Latin-1: {exc.object[exc.start : exc.end]!r}"
            ) from exc
        return cls(Origin(parts.scheme, parts.hostname, port), head)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float
    """Longest wait for the next received bytes (the answer's head, then each piece of its body)."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.reusable = False
        self.complete = False
        self.received = False
        """Any byte of the current answer has arrived (a request that got none may go again on a new connection)."""
        self.pieces: deque[bytes] = deque()
        self.size = 0
        self.lost: HttpError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.idle_since = 0.0
        self.answered = False
        """It has carried a whole answer (a spare opened in advance has not)."""
        self.on_idle_close: Callable[[_Connection], None] | None = None
        """Set while the connection waits in the pool: called if the server closes it there."""

    # --- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self._fail(ProtocolError("the upstream sent bytes nobody asked for"))
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"the upstream's answer is not valid HTTP/1.1 ({exc})"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the upstream switched protocols"))
            return
        if self.size >= _PAUSE_AT and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self.waiter)

    def eof_received(self) -> bool:
        self._fail(ConnectionClosed("the connection was closed"))
        return False  # close the transport: HTTP/1.1 has no half-closed connections

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed("the connection was closed"))

    # --- httptools callbacks ---------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.reusable = self.parser.should_keep_alive()  # llhttp forgets it once the message is complete
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True

    # --- exchange ----------------------------------------------------------------------------------------------
    def _fail(self, error: HttpError) -> None:
        if self.lost is None:
            self.lost = error
        if self.transport is not None:
            self.transport.close()
        _wake(self.waiter)
        hook, self.on_idle_close = self.on_idle_close, None
        if hook is not None:
            hook(self)

    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    def send(self, data: bytes) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers = []
        self.headers_done = self.reusable = self.complete = self.received = False
        assert self.transport is not None
        self.transport.write(data)

    async def wait(self, within: float) -> None:
        """Until the next received bytes, the end of the connection, or `within` seconds (TimedOut)."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(within, _expire, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            timer.cancel()

    def take_pieces(self) -> bytes:
        data = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces.clear()
        self.size = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    def keep_alive(self) -> bool:
        return self.complete and self.reusable and self.usable()

    def close(self) -> None:
        """Close it from this side (never a reason to open a spare)."""
        self.on_idle_close = None
        if self.transport is not None:
            self.transport.close()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimedOut("it timed out"))


class Response:
    """An answer whose head has arrived; its body is read with `pieces()` or `read()`. `aclose()` hands a connection
    whose answer was read to the end back to the pool, and closes any other."""

    def __init__(self, connection: _Connection, pool: Http1Pool, origin: Origin, read_timeout: float) -> None:
        self._connection = connection
        self._pool = pool
        self._origin = origin
        self._read_timeout = read_timeout
        self._closed = False
        self.status = connection.status
        self.headers = connection.headers

    async def pieces(self) -> AsyncIterator[bytes]:
        c = self._connection
        while True:
            if c.pieces:
                yield c.take_pieces()
                continue
            if c.complete:
                return
            if c.lost is not None:
                raise c.lost
            await c.wait(self._read_timeout)

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.pieces()])

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        c = self._connection
        if c.keep_alive() and not c.pieces:
            c.parser = None
            c.answered = True
            self._pool.release(self._origin, c)
        else:
            c.close()


_REPLACE_WITHIN = 1.0
"""A kept-alive connection that the server closes this soon after its answer is replaced by a new one at once."""
_SPARE_CONNECT_SECONDS = 10.0


class Http1Pool:
    """Kept-alive connections per origin.

    Some servers close the connection after every streamed answer while their headers say keep-alive (llama-server
    does). A request would then open a new connection each time, with a TCP handshake (a round trip over a network)
    before it can be sent, and a burst of requests would be sent together only once all of them are connected.
    When a connection that carried an answer is closed this way, the pool opens a spare one to the same origin at
    once, off any request's path. A spare is not replaced when it is closed in turn (a server's idle timeout), and
    never more spares are open than connections were in use, so a server's connection or thread limits are not
    exceeded.
    """

    def __init__(
        self, *, max_idle_per_origin: int = 256, idle_seconds: float = 60.0, tls: ssl.SSLContext | None = None
    ) -> None:
        """`tls`: the context for https origins (default: httpx's, with certifi's roots)."""
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._idle_seconds = idle_seconds
        self._ssl = tls
        self._spares: set[asyncio.Task[None]] = set()
        self._closed = False

    async def send(self, target: Target, body: bytes, timeouts: Timeouts) -> Response:
        """Send one request and wait for its answer's head. A kept-alive connection that the server closed as it
        was reused (llama-server closes the connection after each streamed answer while its headers say
        keep-alive) gets no answer at all: the request then goes once more, on a new connection."""
        data = target.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        while True:
            connection = self._take(target.origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(target.origin, timeouts.connect)
            connection.send(data)
            try:
                while not connection.headers_done:
                    if connection.lost is not None:
                        raise connection.lost
                    await connection.wait(timeouts.read)
            except ConnectionClosed:
                connection.close()
                if reused and not connection.received:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if connection.status < 200:
                # An interim or upgrade answer (we never ask for either): not a response this client can read.
                connection.close()
                raise ProtocolError(f"the upstream answered {connection.status} instead of a response")
            return Response(connection, self, target.origin, timeouts.read)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest_kept = time.monotonic() - self._idle_seconds
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be still open
            connection.on_idle_close = None
            if connection.usable() and connection.idle_since >= oldest_kept:
                return connection
            connection.close()
        return None

    def release(self, origin: Origin, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        idle = self._idle.setdefault(origin, deque())
        connection.idle_since = time.monotonic()
        connection.on_idle_close = lambda closed: self._closed_while_idle(origin, closed)
        idle.append(connection)
        while len(idle) > self._max_idle:
            idle.popleft().close()

    def _closed_while_idle(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.get(origin)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(connection)
        if self._closed or not connection.answered or time.monotonic() - connection.idle_since > _REPLACE_WITHIN:
            return
        task = asyncio.get_running_loop().create_task(self._open_spare(origin))
        self._spares.add(task)
        task.add_done_callback(self._spares.discard)

    async def _open_spare(self, origin: Origin) -> None:
        try:
            connection = await self._connect(origin, _SPARE_CONNECT_SECONDS)
        except HttpError:
            return  # the next request connects (and reports) on its own
        self.release(origin, connection)

    async def _connect(self, origin: Origin, within: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(within):
                _transport, connection = await loop.create_connection(
                    _Connection, origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None
                )
        except TimeoutError as exc:
            raise TimedOut("it timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed("the connection failed") from exc
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            # httpx's context (certifi's roots), as the embeddings and health checks use.
            import httpx

            self._ssl = httpx.create_ssl_context(trust_env=False)
        return self._ssl

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._spares):
            task.cancel()
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.on_idle_close = None
                connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run
