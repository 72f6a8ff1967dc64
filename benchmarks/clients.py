"""HTTP load: streaming OpenAI chat completions over httpx, timed with time.perf_counter.

Every server gets the same request body apart from the model name: greedy (temperature 0), a fixed number of
generated tokens, end-of-sequence tokens banned with logit_bias -100, usage asked for with
stream_options.include_usage. Tokens are counted from `usage.completion_tokens` where the server reports it;
otherwise a stream that ended with finish_reason "length" produced exactly `max_tokens`, and any other is
counted by its content chunks (about one token each; a few tokens come merged or empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

CHAT_PATH = "/v1/chat/completions"
USER_PROMPT = "Tell me how a local model server answers several clients at once, in a few sentences."


def user_prompt(index: int) -> str:
    """The throughput prompt, numbered so that no request finds the previous one's prompt in a cache.

    Every server gets the same numbers in the same order; the number has a fixed width, so every request has the
    same length. Prompt caches are measured on their own, by the 5-turn chat.
    """
    return f"Request {index:05d}. {USER_PROMPT}"


@dataclass(slots=True)
class RequestOptions:
    """What every request of one benchmark shares."""

    model: str
    max_tokens: int
    logit_bias: dict[str, float]
    """Token id (as a string, OpenAI's wire form) -> bias; -100 bans the token."""
    timeout_s: float = 600.0


@dataclass(slots=True)
class RequestResult:
    ok: bool
    error: str = ""
    start: float = 0.0
    """perf_counter when the request was sent."""
    ttft_s: float | None = None
    """Seconds from sending to the first chunk with non-empty content."""
    total_s: float = 0.0
    """Seconds from sending to the end of the stream."""
    completion_tokens: int = 0
    content_chunks: int = 0
    finish_reason: str | None = None
    tokens_from_usage: bool = False
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    text: str = ""

    @property
    def end(self) -> float:
        return self.start + self.total_s

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.total_s if self.ok and self.total_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("text")
        return data


def chat_body(messages: list[dict[str, str]], options: RequestOptions) -> dict[str, Any]:
    return {
        "model": options.model,
        "messages": messages,
        "max_tokens": options.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": options.logit_bias,
    }


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> RequestResult:
    """Send one streaming chat completion and time it; never raises for HTTP or protocol failures."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start)
    parts: list[str] = []
    try:
        async with client.stream("POST", CHAT_PATH, json=body) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode("utf-8", "replace")[:300]
                result.error = f"HTTP {response.status_code}: {detail}"
                result.total_s = time.perf_counter() - start
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, SSE comments and pings
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = orjson.loads(payload)
                if "error" in event:
                    result.error = f"stream error: {str(event['error'])[:300]}"
                    break
                for choice in event.get("choices") or []:
                    result.finish_reason = choice.get("finish_reason") or result.finish_reason
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if result.ttft_s is None:
                            result.ttft_s = time.perf_counter() - start
                        result.content_chunks += 1
                        parts.append(content)
                usage = event.get("usage")
                if usage:
                    result.completion_tokens = int(usage.get("completion_tokens") or 0)
                    result.prompt_tokens = usage.get("prompt_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    result.cached_tokens = details.get("cached_tokens")
                    result.tokens_from_usage = True
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.total_s = time.perf_counter() - start
    result.text = "".join(parts)
    if not result.tokens_from_usage:
        at_limit = result.finish_reason == "length" and result.content_chunks > 0
        result.completion_tokens = int(body["max_tokens"]) if at_limit else result.content_chunks
    result.ok = not result.error and result.completion_tokens > 0
    if not result.ok and not result.error:
        result.error = "the stream carried no tokens"
    return result


def new_client(base_url: str, options: RequestOptions, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, timeout=options.timeout_s, limits=limits)


@dataclass(slots=True)
class LevelResult:
    """`clients` clients at once, each sending `rounds` requests one after another."""

    clients: int
    rounds: int
    wall_s: float
    total_tokens: int
    failures: int
    requests: list[RequestResult] = field(default_factory=list)

    @property
    def total_tokens_per_second(self) -> float:
        return self.total_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        ok = [r for r in self.requests if r.ok]
        return {
            "clients": self.clients,
            "rounds": self.rounds,
            "wall_s": self.wall_s,
            "total_tokens": self.total_tokens,
            "total_tokens_per_second": self.total_tokens_per_second,
            "failures": self.failures,
            "median_request_tokens_per_second": _median([r.tokens_per_second for r in ok]),
            "median_ttft_s": _median([r.ttft_s for r in ok if r.ttft_s is not None]),
            "errors": sorted({r.error for r in self.requests if r.error})[:5],
            "requests": [r.summary() for r in self.requests],
        }


async def open_connections(client: httpx.AsyncClient, connections: int) -> None:
    """Open `connections` keep-alive connections in `client`'s pool (concurrent GET /v1/models, which every server
    here answers), so that a measurement's requests find them open, as an SDK client's later requests do."""
    responses = await asyncio.gather(*(client.get("/v1/models") for _ in range(connections)))
    for response in responses:
        response.raise_for_status()


async def run_level(
    base_url: str,
    options: RequestOptions,
    clients: int,
    rounds: int,
    first_prompt: int = 0,
    pool: httpx.AsyncClient | None = None,
) -> LevelResult:
    """Total throughput with `clients` concurrent clients: all tokens over the wall time of the whole level.

    Requests use prompts `first_prompt`, `first_prompt + 1`, ... (see `user_prompt`). `pool` is a client whose
    connections are already open (see `open_connections`); without it the level opens its own.
    """
    async with contextlib.AsyncExitStack() as stack:
        client = pool if pool is not None else await stack.enter_async_context(new_client(base_url, options, clients))

        async def one_client(number: int) -> list[RequestResult]:
            results = []
            for round_index in range(rounds):
                prompt = user_prompt(first_prompt + round_index * clients + number)
                results.append(await stream_chat(client, chat_body([{"role": "user", "content": prompt}], options)))
            return results

        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(n) for n in range(clients)))
        wall = time.perf_counter() - started
    results = [r for client_results in per_client for r in client_results]
    return LevelResult(
        clients=clients,
        rounds=rounds,
        wall_s=wall,
        total_tokens=sum(r.completion_tokens for r in results if r.ok),
        failures=sum(1 for r in results if not r.ok),
        requests=results,
    )


async def warm_up(base_url: str, options: RequestOptions) -> RequestResult:
    """One short request so that loading, first-call compilation and caches are not timed."""
    short = RequestOptions(options.model, min(options.max_tokens, 8), options.logit_bias, options.timeout_s)
    async with new_client(base_url, short, 1) as client:
        return await stream_chat(client, chat_body([{"role": "user", "content": "Hello."}], short))


@dataclass(slots=True)
class ConversationResult:
    turns: list[RequestResult]

    def to_json(self) -> dict[str, Any]:
        return {"turns": [t.summary() for t in self.turns]}


async def run_conversation(
    base_url: str, options: RequestOptions, system_prompt: str, user_turns: list[str]
) -> ConversationResult:
    """A chat of len(user_turns) turns; each turn sends the whole history, with the replies the server gave."""
    messages = [{"role": "system", "content": system_prompt}]
    turns: list[RequestResult] = []
    async with new_client(base_url, options, 1) as client:
        for user_text in user_turns:
            messages.append({"role": "user", "content": user_text})
            result = await stream_chat(client, chat_body(messages, options))
            turns.append(result)
            if not result.ok:
                break
            messages.append({"role": "assistant", "content": result.text})
    return ConversationResult(turns)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
