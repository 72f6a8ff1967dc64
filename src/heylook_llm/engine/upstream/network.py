"""httpcore's network layer on plain asyncio, for plain-HTTP upstreams (loopback, LAN, a GPU box).

httpcore's own asyncio layer goes through anyio: every read opens a cancel scope for its timeout (looking up the
running async library and the current task each time), and every read pauses and resumes the transport, which
registers and unregisters the socket with the selector. A proxy streaming tokens makes one read per token, and
those costs were a quarter of its CPU per streamed token (benchmarks/README.md, "Proxy overhead"). Here a
connection is an `asyncio.Protocol` whose received bytes wait in a list: a read with data waiting returns it at
once; a read that has to wait arms one timer for its timeout. TLS (https upstreams) stays on httpcore's own layer.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore

_PAUSE_AT = 1 << 20
"""Received bytes waiting to be read at which the socket stops being read (TCP then slows the sender)."""
_RESUME_AT = 1 << 18

_SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.lost: Exception | None = None
        self.reader: asyncio.Future[None] | None = None
        self.writer: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= _PAUSE_AT and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self.reader)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.reader)
        return False  # close the transport: HTTP/1.1 has no half-closed connections

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost = exc
        _wake(self.reader)
        _wake(self.writer)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.writer)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None], error: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(error)


async def _wait(connection: _Connection, within: float | None, error: Exception, writing: bool) -> None:
    """Wait for the connection's next event (data, end, drained writes), at most `within` seconds."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    if writing:
        connection.writer = waiter
    else:
        connection.reader = waiter
    timer = loop.call_later(within, _expire, waiter, error) if within is not None else None
    try:
        await waiter
    finally:
        if writing:
            connection.writer = None
        else:
            connection.reader = None
        if timer is not None:
            timer.cancel()


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    # The `timeout` parameters are httpcore's interface (ASYNC109 asks for asyncio.timeout instead).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        c = self._connection
        if not c.size and not c.eof:
            await _wait(c, timeout, httpcore.ReadTimeout("the upstream sent nothing within the read timeout"), False)
        if not c.size:
            if c.lost is not None:
                raise httpcore.ReadError(str(c.lost) or "the connection was lost")
            return b""
        if c.size <= max_bytes:
            data = c.chunks[0] if len(c.chunks) == 1 else b"".join(c.chunks)
            c.chunks.clear()
        else:
            joined = b"".join(c.chunks)
            data = joined[:max_bytes]
            c.chunks.clear()
            c.chunks.append(joined[max_bytes:])
        c.size -= len(data)
        if c.reading_paused and c.size <= _RESUME_AT:
            c.reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        c = self._connection
        if c.lost is not None or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        while c.writing_paused and c.lost is None:
            await _wait(c, timeout, httpcore.WriteTimeout("the upstream took nothing within the write timeout"), True)
        if c.lost is not None:
            raise httpcore.WriteError(str(c.lost) or "the connection was lost")

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("this network layer is for plain HTTP; https upstreams use httpcore's own")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of an idle kept-alive connection: anything received (the server's close, above
            # all) means it cannot take another request.
            return self._connection.eof or self._connection.size > 0
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None  # "ssl_object" included: no TLS here


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    _Connection, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within the connect timeout") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        raw = transport.get_extra_info("socket")
        if raw is not None:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each request in one go, no Nagle wait
            for option in socket_options or ():
                raw.setsockopt(*option)
        return AsyncioStream(transport, connection)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("this network layer connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
