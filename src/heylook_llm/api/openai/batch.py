"""Chat requests that run several generations: OpenAI's `n` (several choices for one prompt) and the batch
processing modes (`processing_mode`, docs/batch.md). The engine side is `engine.fanout` and `engine.batch`;
this module turns their pieces into OpenAI JSON bodies and SSE chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from heylook_llm.api.disconnect import unless_disconnected
from heylook_llm.api.errors import openai_error_payload
from heylook_llm.api.framing import SSE_DONE, OrjsonResponse, sse_event
from heylook_llm.api.openai import convert
from heylook_llm.api.openai.schemas import ChatCompletionRequest
from heylook_llm.engine.batch import CONVERSATION_BOUNDARY, BatchRun, ProcessingMode, run_batch, split_groups
from heylook_llm.engine.fanout import Piece, StartGeneration, already_started, interleave, run_together
from heylook_llm.engine.router import ActiveGeneration
from heylook_llm.errors import HeylookError, InvalidRequest
from heylook_llm.types import FinishReason, GenerationRequest, GenerationStats

JOINED_SEPARATOR = f"\n\n{CONVERSATION_BOUNDARY}\n\n"
"""Between the groups' answers when `return_individual` is false, so that a client can split them again."""


def runs_several(body: ChatCompletionRequest) -> bool:
    return body.n > 1 or body.processing_mode != ProcessingMode.CONVERSATION


async def respond(
    request: Request, start: StartGeneration, body: ChatCompletionRequest, gen: GenerationRequest
) -> Response:
    """Answer a chat request with `n` > 1 or a batch processing mode; `gen` is the converted request."""
    mode = ProcessingMode(body.processing_mode)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if mode is ProcessingMode.CONVERSATION:
        return await _choices(request, start, body.n, gen, body.stream, include_usage)
    if body.n > 1:
        raise InvalidRequest("n > 1 works only with processing_mode conversation", param="n")
    return await _batch(request, start, body, gen, mode)


# --- n choices ----------------------------------------------------------------------------------


def choice_requests(gen: GenerationRequest, n: int) -> list[GenerationRequest]:
    """One request per choice; with a seed, choice i samples with seed + i (reproducible, yet not n copies)."""
    seed = gen.sampling.seed
    return [
        dataclasses.replace(gen, sampling=dataclasses.replace(gen.sampling, seed=None if seed is None else seed + i))
        for i in range(n)
    ]


async def _choices(
    request: Request, start: StartGeneration, n: int, gen: GenerationRequest, stream: bool, include_usage: bool
) -> Response:
    gens = choice_requests(gen, n)
    if not stream:
        outcomes = await unless_disconnected(request, run_together(start, gens))
        for outcome in outcomes:
            if isinstance(outcome, HeylookError):
                raise outcome
        finished = [o for o in outcomes if not isinstance(o, HeylookError)]
        body = convert.chat_response(gen, finished[0].text, finished[0].finish_reason, finished[0].stats)
        body["choices"] = [_choice(i, f.text, f.finish_reason) for i, f in enumerate(finished)]
        body["usage"] = convert.usage([f.stats for f in finished])
        return OrjsonResponse(body)
    # Every choice is started before the response begins, so that a refused prompt is an HTTP error.
    results = await asyncio.gather(*(start(g) for g in gens), return_exceptions=True)
    actives = [r for r in results if isinstance(r, ActiveGeneration)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        for active in actives:
            active.close()
        raise failure
    events = _choice_events(gen, actives, include_usage)
    return StreamingResponse(events, media_type="text/event-stream")


async def _choice_events(
    gen: GenerationRequest, actives: list[ActiveGeneration], include_usage: bool
) -> AsyncIterator[bytes]:
    created = int(time.time())
    stats: list[GenerationStats] = []
    pieces = interleave([already_started(a) for a in actives])
    try:
        for index in range(len(actives)):
            yield sse_event(_chunk(gen, created, index, {"role": "assistant", "content": ""}))
        async for piece in pieces:
            if piece.error is not None:
                # Headers are gone already: report the failure as an error event, as OpenAI does mid-stream.
                yield sse_event(openai_error_payload(piece.error))
                return
            assert piece.chunk is not None
            if piece.chunk.text:
                yield sse_event(_chunk(gen, created, piece.index, {"content": piece.chunk.text}))
            if piece.chunk.finish_reason is not None:
                yield sse_event(_chunk(gen, created, piece.index, {}, piece.chunk.finish_reason))
                stats.append(piece.chunk.stats or GenerationStats())
        if include_usage:
            yield sse_event(convert.usage_chunk(gen, created, "chat.completion.chunk", stats))
        yield SSE_DONE
    finally:
        await pieces.aclose()
        for active in actives:
            active.close()


def _choice(index: int, text: str, reason: FinishReason | None) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": None,
        "finish_reason": convert.finish_reason(reason),
    }


def _chunk(
    gen: GenerationRequest,
    created: int,
    index: int,
    delta: dict[str, Any],
    reason: FinishReason | None = None,
) -> dict[str, Any]:
    chunk = convert.chat_chunk(gen, created, delta, reason)
    chunk["choices"][0]["index"] = index
    return chunk


# --- batch processing modes -----------------------------------------------------------------------


@dataclass(slots=True)
class _GroupResult:
    parts: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    error: HeylookError | None = None


def _record(results: list[_GroupResult], piece: Piece) -> None:
    result = results[piece.index]
    if piece.error is not None:
        result.error = piece.error
        return
    assert piece.chunk is not None
    result.parts.append(piece.chunk.text)
    if piece.chunk.finish_reason is not None:
        result.finish_reason = piece.chunk.finish_reason
        result.stats = piece.chunk.stats or GenerationStats()


async def _batch(
    request: Request, start: StartGeneration, body: ChatCompletionRequest, gen: GenerationRequest, mode: ProcessingMode
) -> Response:
    assert gen.messages is not None
    split = split_groups(gen.messages)
    run = BatchRun(mode, split.groups, split.shared)
    pieces = run_batch(start, gen, mode, split, run)
    if body.stream:
        return StreamingResponse(_batch_events(gen, run, pieces, body.include_timing), media_type="text/event-stream")

    async def read_all() -> list[_GroupResult]:
        results = [_GroupResult() for _ in split.groups]
        async for piece in pieces:
            _record(results, piece)
        return results

    results = await unless_disconnected(request, read_all())
    return OrjsonResponse(_batch_body(gen, run, results, body.return_individual, body.include_timing))


def _batch_info(run: BatchRun, results: list[_GroupResult]) -> dict[str, Any]:
    failed = [
        {"group_index": i, "error": openai_error_payload(r.error)["error"]}
        for i, r in enumerate(results)
        if r.error is not None
    ]
    info: dict[str, Any] = {
        "processing_mode": run.mode.value,
        "groups_processed": len(results),
        "successful": len(results) - len(failed),
        "failed": failed,
    }
    if run.mode is ProcessingMode.PARALLEL_WITH_CONTEXT:
        prefix = run.shared_prefix_stats
        info["shared_prefix"] = {
            "messages": len(run.shared),
            "prompt_tokens": prefix.prompt_tokens if prefix is not None else 0,
            "evaluated": prefix is not None,
        }
    return info


def _timing(run: BatchRun) -> dict[str, Any]:
    groups = len(run.timings)
    timing: dict[str, Any] = {
        "total_time": run.total_seconds,
        "average_per_group": run.total_seconds / groups if groups else 0.0,
        "group_times": [t.ended - t.started if t.ended else None for t in run.timings],
    }
    if run.mode.parallel:
        timing["parallel_speedup"] = run.parallel_speedup()
    if run.mode is ProcessingMode.PARALLEL_WITH_CONTEXT:
        timing["shared_prefix_time"] = run.shared_prefix_seconds
    return timing


def _batch_body(
    gen: GenerationRequest, run: BatchRun, results: list[_GroupResult], individual: bool, include_timing: bool
) -> dict[str, Any]:
    answered = [r for r in results if r.error is None and r.stats is not None]
    body: dict[str, Any] = {
        "id": gen.request_id,
        "object": "chat.completion.batch",
        "created": int(time.time()),
        "model": gen.model_id,
    }
    if individual:
        body["completions"] = [
            None
            if r.error is not None or r.stats is None
            else convert.chat_response(run.requests[i], "".join(r.parts), r.finish_reason, r.stats)
            for i, r in enumerate(results)
        ]
    else:
        reasons = [r.finish_reason for r in answered]
        joined = JOINED_SEPARATOR.join("".join(r.parts) if r.error is None else "" for r in results)
        reason = FinishReason.LENGTH if FinishReason.LENGTH in reasons else FinishReason.STOP
        body["choices"] = [_choice(0, joined, reason if answered else None)]
    body["usage"] = convert.usage([r.stats for r in answered if r.stats is not None])
    body["batch_info"] = _batch_info(run, results)
    if include_timing:
        body["timing"] = _timing(run)
    return body


async def _batch_events(
    gen: GenerationRequest, run: BatchRun, pieces: AsyncIterator[Piece], include_timing: bool
) -> AsyncIterator[bytes]:
    """Chunks carry the group index as `choices[].index`. A failed group gets a choice with finish_reason "error"
    and its `error`; the last chunk (no choices) has the summed usage and `batch_info`."""
    created = int(time.time())
    results = [_GroupResult() for _ in run.groups]
    begun: set[int] = set()
    async for piece in pieces:
        _record(results, piece)
        if piece.index not in begun:
            begun.add(piece.index)
            yield sse_event(_chunk(gen, created, piece.index, {"role": "assistant", "content": ""}))
        if piece.error is not None:
            chunk = _chunk(gen, created, piece.index, {})
            chunk["choices"][0]["finish_reason"] = "error"
            # On the choice, not the chunk: OpenAI clients end the whole stream at a chunk with a top-level error.
            chunk["choices"][0]["error"] = openai_error_payload(piece.error)["error"]
            yield sse_event(chunk)
            continue
        assert piece.chunk is not None
        if piece.chunk.text:
            yield sse_event(_chunk(gen, created, piece.index, {"content": piece.chunk.text}))
        if piece.chunk.finish_reason is not None:
            yield sse_event(_chunk(gen, created, piece.index, {}, piece.chunk.finish_reason))
    answered = [r.stats for r in results if r.error is None and r.stats is not None]
    final = convert.usage_chunk(gen, created, "chat.completion.chunk", answered)
    final["batch_info"] = _batch_info(run, results)
    if include_timing:
        final["timing"] = _timing(run)
    yield sse_event(final)
    yield SSE_DONE
