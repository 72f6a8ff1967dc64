"""OpenAI text completions for a prompt or a list of prompts.

Every prompt of one request is admitted together through the engine (`StartGeneration.all`): the request is
refused whole when its prompts could never fit the model's queue (413 naming max_queued_requests_per_model) or do
not fit now (503), and a prompt that fails cancels all the others before the error is answered, so no generation
runs for a client that got an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.api.framing import SSE_DONE, OrjsonResponse, sse_event
from heylook_llm.api.openai import convert
from heylook_llm.api.openai.dialect import openai_stream_error
from heylook_llm.api.openai.schemas import CompletionRequest
from heylook_llm.engine.fanout import StartGeneration
from heylook_llm.engine.output import CollectedOutput
from heylook_llm.engine.service import ActiveGeneration
from heylook_llm.errors import HeylookError
from heylook_llm.types import GenerationRequest, GenerationStats, TokenLogprob


async def respond(
    request: Request, start: StartGeneration, body: CompletionRequest, gens: list[GenerationRequest]
) -> Response:
    actives = await unless_disconnected(request, start.all(gens, param="prompt"))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(gens, actives, include_usage, body.echo)
        return StreamedResponse(events, media_type="text/event-stream")
    outputs = await unless_disconnected(request, _collect_all(actives))
    choices = [
        convert.completion_choice(
            i, _echoed(gen, body.echo) + output.text, output.finish_reason, _logprobs(gen, output.logprobs, body.echo)
        )
        for i, (gen, output) in enumerate(zip(gens, outputs, strict=True))
    ]
    stats = [output.stats or GenerationStats() for output in outputs]
    return OrjsonResponse(convert.completion_response(gens[0], choices, stats))


async def _collect_all(actives: list[ActiveGeneration]) -> list[CollectedOutput]:
    """Read every generation to its end; one failing (or the client leaving) stops all the others."""
    tasks = [asyncio.ensure_future(a.collect()) for a in actives]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        for active in actives:
            active.close()


def _echoed(gen: GenerationRequest, echo: bool) -> str:
    return (gen.prompt or "") if echo else ""


def _logprobs(
    gen: GenerationRequest, entries: list[TokenLogprob], echo: bool, offset: int = 0
) -> dict[str, Any] | None:
    """The legacy `logprobs` of generated tokens (null unless asked); offsets count the echoed prompt."""
    if not gen.logprobs:
        return None
    return convert.completion_logprobs(entries, len(_echoed(gen, echo)) + offset)


async def _events(
    gens: list[GenerationRequest], actives: list[ActiveGeneration], include_usage: bool, echo: bool
) -> AsyncIterator[bytes]:
    """The prompts' choices in order (all of them generate at once; later ones wait, merged, until read)."""
    created = int(time.time())
    all_stats: list[GenerationStats] = []
    try:
        for index, (gen, active) in enumerate(zip(gens, actives, strict=True)):
            if _echoed(gen, echo):
                choice = convert.completion_choice(index, gen.prompt or "", None)
                yield sse_event(convert.completion_chunk(gen, created, choice))
            offset = 0
            async for chunk in active.chunks():
                if chunk.text or chunk.logprobs or chunk.finish_reason is not None:
                    logprobs = _logprobs(gen, chunk.logprobs, echo, offset)
                    offset += sum(len(entry.text) for entry in chunk.logprobs)
                    choice = convert.completion_choice(index, chunk.text, chunk.finish_reason, logprobs)
                    yield sse_event(convert.completion_chunk(gen, created, choice))
                if chunk.stats is not None:
                    all_stats.append(chunk.stats)
            active.close()
        if include_usage:
            yield sse_event(convert.usage_chunk(gens[0], created, "text_completion", all_stats))
        yield SSE_DONE
    except HeylookError as exc:
        yield openai_stream_error(exc)
    finally:
        for active in actives:
            active.close()
