"""HTTP to upstream servers: streamed generations read line by line (server-sent events or NDJSON) over kept-alive
HTTP/1.1 connections (http1.py), embeddings and health checks over one httpx.AsyncClient, and the upstream's errors
as domain errors.

Generations do not go through httpx: per request and per network read, its client layers (URL merging, cookies,
redirects, auth, stream wrappers and decoders) and h11's pure-Python parsing cost more CPU than the rest of the
proxy's upstream leg, and a proxy needs none of them (benchmarks/README.md, "Proxy overhead")."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import orjson

from heylook_llm import __version__
from heylook_llm.engine.upstream import http1, ollama_wire, openai_wire
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
class Timeouts(http1.Timeouts):
    """http1's timeouts, also in httpx's form for embeddings and health checks."""

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect)


def _headers(replica: Replica) -> dict[str, str]:
    return {"Authorization": f"Bearer {replica.api_key}"} if replica.api_key else {}


_USER_AGENT = f"heylookllm/{__version__}"


def _target(replica: Replica, path: str) -> http1.Target:
    """A generation endpoint and its fixed request headers. No Accept-Encoding: the stream is read as it arrives,
    without a decompression step."""
    headers = [("Accept", "*/*"), ("User-Agent", _USER_AGENT), ("Content-Type", "application/json")]
    if replica.api_key:
        headers.append(("Authorization", f"Bearer {replica.api_key}"))
    return http1.Target.of(replica.base_url + path, "POST", headers)


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
        # Generations: the same keep-alive limits, without environment proxies either.
        self.pool = http1.Http1Pool(max_idle_per_origin=256, idle_seconds=60.0)
        self._targets: dict[tuple[str, str, str | None], http1.Target] = {}

    async def close(self) -> None:
        await self.pool.aclose()
        await self.http.aclose()

    def _target(self, replica: Replica, path: str) -> http1.Target:
        key = (replica.base_url, path, replica.api_key)
        found = self._targets.get(key)
        if found is None:
            found = self._targets[key] = _target(replica, path)
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
        except ValueError as exc:
            raise GenerationFailed(
                f"the upstream ({replica.name}) cannot be asked: its settings are invalid: {exc}"
            ) from exc
        try:
            response = await self.pool.send(target, orjson.dumps(body), timeouts)
        except _HTTP_ERRORS as exc:
            raise UpstreamUnavailable(f"the upstream ({replica.name}) cannot be reached: {_reason(exc)}") from exc
        try:
            if response.status >= 400:
                raise _error(replica, response.status, await response.read())
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
    response: http1.Response, decoder: _Decoder
) -> AsyncGenerator[tuple[GenerationChunk | None, int], None]:
    """Each network read's complete lines decoded and merged into one chunk (with the number of lines): when the
    upstream's events come faster than this server forwards them, they go on as fewer, larger chunks instead of
    queueing one by one (every chunk costs a pass through the parser, the dialect's encoder and the socket)."""
    pending = b""
    async for data in response.pieces():
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


_HTTP_ERRORS = (httpx.HTTPError, http1.HttpError)
"""What httpx and http1 raise for a failed exchange."""


def _reason(exc: Exception) -> str:
    """Why an exchange failed, in words (no exception class names or addresses for clients)."""
    if isinstance(exc, httpx.TimeoutException | http1.TimedOut):
        return "it timed out"
    if isinstance(exc, httpx.ConnectError | http1.ConnectFailed):
        return "the connection failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | http1.ConnectionClosed):
        return "the connection was closed"
    if isinstance(exc, http1.ProtocolError):
        return str(exc)
    return "the HTTP exchange failed"
