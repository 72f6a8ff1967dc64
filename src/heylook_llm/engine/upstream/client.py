"""HTTP to upstream servers: streamed generations read line by line (server-sent events or NDJSON) over httpcore
connection pools (plain HTTP on asyncio directly, see network.py; https on httpcore's own network layer),
embeddings and health checks over one httpx.AsyncClient, and the upstream's errors as domain errors.

Generations go through httpcore (the transport under httpx) directly: per request and per network read, httpx's
client layers (URL merging, cookies, redirects, auth, its response stream wrappers and decoders) cost as much CPU as
the rest of the proxy's upstream leg, and a proxy needs none of them (benchmarks/README.md, "Proxy overhead")."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpcore
import httpx
import orjson

from heylook_llm import __version__
from heylook_llm.engine.upstream import ollama_wire, openai_wire
from heylook_llm.engine.upstream.network import AsyncioBackend
from heylook_llm.engine.upstream.replicas import Replica
from heylook_llm.errors import GenerationFailed, HeylookError, InvalidRequest, LimitExceeded
from heylook_llm.types import EmbeddingInputs, EmbeddingResult, GenerationChunk, GenerationRequest, GenerationStats

WireName = Literal["openai", "ollama"]


class UpstreamUnavailable(GenerationFailed):
    """The replica could not be reached or failed on its side (connection, timeout, 5xx, 429): before the first
    token the request is tried once on another replica, and the replica is taken out until a health check passes."""


class _Decoder(Protocol):
    stats: GenerationStats
    done: bool

    def feed(self, line: str) -> GenerationChunk | None: ...

    def finish_reason(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect)

    def extensions(self) -> dict[str, Any]:
        """httpcore's form of the same timeouts (writing and waiting for a pooled connection: the read timeout)."""
        return {"timeout": {"connect": self.connect, "read": self.read, "write": self.read, "pool": self.read}}


def _headers(replica: Replica) -> dict[str, str]:
    return {"Authorization": f"Bearer {replica.api_key}"} if replica.api_key else {}


_USER_AGENT = f"heylookllm/{__version__}".encode()


@dataclass(frozen=True, slots=True)
class _Target:
    """A generation endpoint's URL and fixed request headers, built once per replica and path. No Accept-Encoding:
    the stream is read as it arrives, without a decompression step."""

    url: httpcore.URL
    headers: list[tuple[bytes, bytes]]

    @classmethod
    def of(cls, replica: Replica, path: str) -> _Target:
        url = httpcore.URL(replica.base_url + path)
        host = b"[" + url.host + b"]" if b":" in url.host else url.host  # an IPv6 address
        port = b"" if url.port is None else b":%d" % url.port
        headers = [
            (b"Host", host + port),
            (b"Accept", b"*/*"),
            (b"User-Agent", _USER_AGENT),
            (b"Content-Type", b"application/json"),
        ]
        if replica.api_key:
            headers.append((b"Authorization", f"Bearer {replica.api_key}".encode()))
        return cls(url, headers)


def _error(replica: Replica, status: int, raw: bytes) -> HeylookError:
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    message = openai_wire.error_text(body)
    said = f"the upstream ({replica.name}) answered {status}: {message}"
    if status in (429,) or status >= 500:
        return UpstreamUnavailable(said)
    if status == 413:
        return LimitExceeded(said, param=openai_wire.error_param(body))
    if status in (400, 422):
        return InvalidRequest(said, param=openai_wire.error_param(body))
    # 401, 403, 404...: the upstream's settings in models.yaml are wrong, not the client's request.
    return GenerationFailed(said)


class UpstreamClient:
    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        # httpx logs every request at INFO: one line per generation and per health check. Failures are logged
        # here, with the model and replica named.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.http = (
            client
            if client is not None
            else httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=60.0),
                # Replies are read as they come; no proxy from the environment for loopback and LAN servers' speed.
                trust_env=False,
            )
        )
        # Generations: the same limits, without environment proxies either (httpcore reads no environment).
        # Plain-HTTP upstreams on asyncio directly (network.py); https ones on httpcore's own network layer.
        self.pool = httpcore.AsyncConnectionPool(
            max_connections=1024,
            max_keepalive_connections=256,
            keepalive_expiry=60.0,
            network_backend=AsyncioBackend(),
        )
        self.tls_pool = httpcore.AsyncConnectionPool(
            max_connections=1024, max_keepalive_connections=256, keepalive_expiry=60.0
        )
        self._targets: dict[tuple[str, str, str | None], _Target] = {}

    async def close(self) -> None:
        await self.pool.aclose()
        await self.tls_pool.aclose()
        await self.http.aclose()

    async def _send(self, request: httpcore.Request) -> httpcore.Response:
        pool = self.pool if request.url.scheme == b"http" else self.tls_pool
        try:
            return await pool.handle_async_request(request)
        except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
            # A kept-alive connection that the server closed as it was reused: llama-server closes the connection
            # after each streamed answer while its headers say keep-alive, and when its close arrives after the next
            # request was sent, that request fails with no answer. Sent once more, on a new connection.
            return await pool.handle_async_request(request)

    def _target(self, replica: Replica, path: str) -> _Target:
        key = (replica.base_url, path, replica.api_key)
        found = self._targets.get(key)
        if found is None:
            found = self._targets[key] = _Target.of(replica, path)
        return found

    async def stream(
        self, wire: WireName, replica: Replica, request: GenerationRequest, timeouts: Timeouts
    ) -> AsyncGenerator[GenerationChunk, None]:
        """The generation's chunks; the last one has the finish reason and the statistics."""
        codec = ollama_wire if wire == "ollama" else openai_wire
        path, body = codec.request_body(request, replica.model)
        decoder: _Decoder = ollama_wire.LineDecoder() if wire == "ollama" else openai_wire.StreamDecoder()
        sent = time.perf_counter()
        first: float | None = None
        lines = 0
        try:
            target = self._target(replica, path)
            content = orjson.dumps(body)
            http_request = httpcore.Request(
                b"POST",
                target.url,
                headers=[*target.headers, (b"Content-Length", b"%d" % len(content))],
                content=content,
                extensions=timeouts.extensions(),
            )
            response = await self._send(http_request)
        except _HTTP_ERRORS as exc:
            raise UpstreamUnavailable(f"the upstream ({replica.name}) cannot be reached: {_reason(exc)}") from exc
        try:
            if response.status >= 400:
                raise _error(replica, response.status, await response.aread())
            async for merged, count in _merged_events(response, decoder):
                lines += count
                if merged is not None:
                    if first is None:
                        first = time.perf_counter()
                    yield merged
        except _HTTP_ERRORS as exc:
            raise UpstreamUnavailable(f"the upstream ({replica.name}) failed while answering: {_reason(exc)}") from exc
        finally:
            await response.aclose()
        reason = decoder.finish_reason()
        if reason is None and not lines:
            # llama-cpp-python's server answers a streamed request it refuses (a prompt past its context) with an
            # empty 200: the server is up, the request failed, and the upstream did not say why.
            raise GenerationFailed(f"the upstream ({replica.name}) answered with an empty stream, without a reason")
        if reason is None:
            raise UpstreamUnavailable(f"the upstream ({replica.name}) ended its answer without a finish reason")
        end = time.perf_counter()
        stats = decoder.stats
        stats.prompt_eval_seconds = (first if first is not None else end) - sent
        stats.generation_seconds = end - first if first is not None else 0.0
        yield GenerationChunk("", finish_reason=reason, stats=stats)

    async def embed(
        self, wire: WireName, replica: Replica, inputs: EmbeddingInputs, truncate: bool, timeouts: Timeouts
    ) -> EmbeddingResult:
        if wire == "ollama":
            path, body = ollama_wire.embed_body(inputs, replica.model, truncate)
        else:
            path, body = openai_wire.embed_body(inputs, replica.model)
        try:
            response = await self.http.post(
                replica.base_url + path,
                content=orjson.dumps(body),
                headers={**_headers(replica), "Content-Type": "application/json"},
                timeout=timeouts.httpx(),
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"the upstream ({replica.name}) cannot be reached: {_reason(exc)}") from exc
        if response.status_code >= 400:
            raise _error(replica, response.status_code, response.content)
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise GenerationFailed(f"the upstream ({replica.name}) answered with something that is not JSON") from exc
        return ollama_wire.embed_result(payload) if wire == "ollama" else openai_wire.embed_result(payload)

    async def check(self, wire: WireName, replica: Replica, within_seconds: float) -> str | None:
        """None when the replica answers its health path (OpenAI: `/models`; Ollama: `/api/version`), else why not."""
        path = "/api/version" if wire == "ollama" else "/models"
        try:
            response = await self.http.get(replica.base_url + path, headers=_headers(replica), timeout=within_seconds)
        except httpx.HTTPError as exc:
            return _reason(exc)
        return None if response.status_code < 400 else f"{path} answered {response.status_code}"


async def _merged_events(
    response: httpcore.Response, decoder: _Decoder
) -> AsyncGenerator[tuple[GenerationChunk | None, int], None]:
    """Each network read's complete lines decoded and merged into one chunk (with the number of lines): when the
    upstream's events come faster than this server forwards them, they go on as fewer, larger chunks instead of
    queueing one by one (every chunk costs a pass through the parser, the dialect's encoder and the socket)."""
    pending = b""
    async for data in response.aiter_stream():
        if decoder.done:
            continue  # read to the end, so that the connection goes back to the pool instead of being closed
        pending += data
        if b"\n" not in data:
            continue
        *complete, pending = pending.split(b"\n")
        merged: GenerationChunk | None = None
        for raw in complete:
            chunk = decoder.feed(raw.decode("utf-8", "replace").rstrip("\r"))
            if chunk is not None:
                if merged is None:
                    merged = chunk
                else:
                    merged.absorb(chunk)
            if decoder.done:
                break
        yield merged, len(complete)
    if pending.strip() and not decoder.done:
        yield decoder.feed(pending.decode("utf-8", "replace")), 1


_HTTP_ERRORS = (
    httpx.HTTPError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
"""What httpx and httpcore raise for a failed exchange (httpcore's errors have no common base class)."""


def _reason(exc: Exception) -> str:
    """Why an exchange failed, in words (no exception class names or addresses for clients)."""
    if isinstance(exc, httpx.TimeoutException | httpcore.TimeoutException):
        return "it timed out"
    if isinstance(exc, httpx.ConnectError | httpcore.ConnectError):
        return "the connection failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpcore.RemoteProtocolError | httpcore.ReadError):
        return "the connection was closed"
    return "the HTTP exchange failed"
