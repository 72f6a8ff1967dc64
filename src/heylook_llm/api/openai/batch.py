"""OpenAI encoding of chat requests that run several generations: `n` choices for one prompt, and the batch
processing modes (`processing_mode`, docs/batch.md). The engine's generation plan (`engine.plan`) runs them and
yields pieces tagged by index; this module only turns those pieces into OpenAI JSON bodies and SSE chunks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.api.framing import SSE_DONE, OrjsonResponse, sse_event
from heylook_llm.api.openai import convert
from heylook_llm.api.openai.dialect import openai_error_payload, openai_stream_error
from heylook_llm.api.openai.schemas import ChatCompletionRequest
from heylook_llm.engine.batch import CONVERSATION_BOUNDARY, BatchRun, ProcessingMode
from heylook_llm.engine.fanout import Piece, StartGeneration
from heylook_llm.engine.plan import PieceResult, PlanRun, start_plan
from heylook_llm.errors import HeylookError
from heylook_llm.types import FinishReason, GenerationRequest, GenerationStats, ToolCall

JOINED_SEPARATOR = f"\n\n{CONVERSATION_BOUNDARY}\n\n"
"""Between the groups' answers when `return_individual` is false, so that a client can split them again."""


def runs_several(body: ChatCompletionRequest) -> bool:
    return body.n > 1 or body.processing_mode != ProcessingMode.CONVERSATION


async def respond(
    request: Request, start: StartGeneration, body: ChatCompletionRequest, gen: GenerationRequest
) -> Response:
    """Answer a chat request with `n` > 1 or a batch processing mode; `gen` is the converted request."""
    plan = await unless_disconnected(request, start_plan(start, gen, body.n, ProcessingMode(body.processing_mode)))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if plan.batch is not None:
        if body.stream:
            events = _batch_events(plan, plan.batch, body.include_timing)
            return StreamedResponse(events, media_type="text/event-stream")
        results = await unless_disconnected(request, plan.collect())
        return OrjsonResponse(_batch_body(gen, plan.batch, results, body.return_individual, body.include_timing))
    if body.stream:
        return StreamedResponse(_choice_events(plan, include_usage), media_type="text/event-stream")
    results = await unless_disconnected(request, plan.collect())
    for result in results:
        if result.error is not None:
            raise result.error
    reply = convert.chat_response(gen, results[0].text, results[0].finish_reason, results[0].stats or GenerationStats())
    reply["choices"] = [_result_choice(gen, i, r) for i, r in enumerate(results)]
    reply["usage"] = convert.usage([r.stats or GenerationStats() for r in results])
    return OrjsonResponse(reply)


# --- n choices ----------------------------------------------------------------------------------


async def _choice_events(plan: PlanRun, include_usage: bool) -> AsyncIterator[bytes]:
    gen = plan.base
    created = int(time.time())
    stats: list[GenerationStats] = []
    try:
        for index in range(plan.count):
            yield sse_event(_chunk(gen, created, index, {"role": "assistant", "content": ""}))
        async for piece in plan.pieces:
            if piece.error is not None:
                # Headers are gone already: report the failure as an error event, as OpenAI does mid-stream.
                yield openai_stream_error(piece.error)
                return
            assert piece.chunk is not None
            for delta, logprobs in convert.chat_deltas(gen, piece.chunk):
                yield sse_event(_chunk(gen, created, piece.index, delta, logprobs=logprobs))
            if piece.chunk.tool_calls:
                delta = {"tool_calls": convert.tool_call_deltas(piece.chunk.tool_calls)}
                yield sse_event(_chunk(gen, created, piece.index, delta))
            if piece.chunk.finish_reason is not None:
                yield sse_event(_chunk(gen, created, piece.index, {}, piece.chunk.finish_reason))
                stats.append(piece.chunk.stats or GenerationStats())
        if include_usage:
            yield sse_event(convert.usage_chunk(gen, created, "chat.completion.chunk", stats))
        yield SSE_DONE
    finally:
        await plan.pieces.aclose()


def _choice(index: int, text: str, reason: FinishReason | None, calls: list[ToolCall] | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "message": convert.assistant_message(text, calls or []),
        "logprobs": None,
        "finish_reason": convert.finish_reason(reason),
    }


def _result_choice(gen: GenerationRequest, index: int, result: PieceResult) -> dict[str, Any]:
    """Choice `index` of `n`: its message with reasoning and calls, and its logprobs when asked."""
    output = result.output
    return {
        "index": index,
        "message": convert.assistant_message(output.text, output.calls, output.reasoning),
        "logprobs": convert.chat_logprobs(gen, output.logprobs),
        "finish_reason": convert.finish_reason(output.finish_reason),
    }


def _chunk(
    gen: GenerationRequest,
    created: int,
    index: int,
    delta: dict[str, Any],
    reason: FinishReason | None = None,
    *,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chunk = convert.chat_chunk(gen, created, delta, reason, logprobs)
    chunk["choices"][0]["index"] = index
    return chunk


# --- batch processing modes -----------------------------------------------------------------------


def _batch_info(run: BatchRun, results: list[PieceResult]) -> dict[str, Any]:
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
    gen: GenerationRequest, run: BatchRun, results: list[PieceResult], individual: bool, include_timing: bool
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
            else convert.chat_response(run.requests[i], r.text, r.finish_reason, r.stats)
            for i, r in enumerate(results)
        ]
    else:
        reasons = [r.finish_reason for r in answered]
        joined = JOINED_SEPARATOR.join(r.text if r.error is None else "" for r in results)
        reason = FinishReason.LENGTH if FinishReason.LENGTH in reasons else FinishReason.STOP
        body["choices"] = [_choice(0, joined, reason if answered else None)]
    body["usage"] = convert.usage([r.stats for r in answered if r.stats is not None])
    body["batch_info"] = _batch_info(run, results)
    if include_timing:
        body["timing"] = _timing(run)
    return body


async def _pieces_or_refusal(plan: PlanRun) -> AsyncIterator[Piece | HeylookError]:
    """The plan's pieces, ending with the error that refused the groups as a whole, if they were."""
    try:
        async for piece in plan.pieces:
            yield piece
    except HeylookError as exc:
        yield exc


async def _batch_events(plan: PlanRun, run: BatchRun, include_timing: bool) -> AsyncIterator[bytes]:
    """Chunks carry the group index as `choices[].index`. A failed group gets a choice with finish_reason "error"
    and its `error`; the last chunk (no choices) has the summed usage and `batch_info`."""
    gen = plan.base
    created = int(time.time())
    results = [PieceResult() for _ in run.groups]
    begun: set[int] = set()
    try:
        pieces = _pieces_or_refusal(plan)
        async for piece in pieces:
            if isinstance(piece, HeylookError):
                # The groups were refused whole (the model's queue is full, the server stops): no group ran.
                yield openai_stream_error(piece)
                return
            results[piece.index].record(piece)
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
    finally:
        await plan.pieces.aclose()
    answered = [r.stats for r in results if r.error is None and r.stats is not None]
    final = convert.usage_chunk(gen, created, "chat.completion.chunk", answered)
    final["batch_info"] = _batch_info(run, results)
    if include_timing:
        final["timing"] = _timing(run)
    yield sse_event(final)
    yield SSE_DONE
