"""Anthropic HTTP routes: parse, refuse, convert, run through the Engine, encode (one message or named SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from heylook_llm.api import limits
from heylook_llm.api.anthropic import convert, refusals
from heylook_llm.api.anthropic.dialect import AnthropicRoute, anthropic_stream_error, named_event
from heylook_llm.api.anthropic.schemas import CountTokensRequest, MessagesRequest, error_schema
from heylook_llm.api.anthropic.stream import PING, BlockEncoder
from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.images import ResizeOptions
from heylook_llm.api.state import engine_of, field_log_of, images_of
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.service import ActiveGeneration
from heylook_llm.errors import HeylookError
from heylook_llm.types import Feature, GenerationRequest, GenerationStats

ERRORS: dict[int | str, dict[str, Any]] = {code: error_schema() for code in (400, 404, 413, 500, 503)}
routes = APIRouter(tags=["Anthropic"], responses=ERRORS, route_class=AnthropicRoute)


async def _neutral(body: CountTokensRequest, request: Request) -> tuple[ModelEntry, GenerationRequest]:
    """Checks, model, images and the neutral request: the part both routes share."""
    field_log_of(request).note("Anthropic", refusals.check_request(body))
    engine = engine_of(request)
    limits.check_messages(engine.settings.limits, body.messages)
    if isinstance(body, MessagesRequest):
        limits.check_stop(engine.settings.limits, body.stop_sequences, "stop_sequences")
    entry = engine.resolve(body.model)
    accepts_images = Feature.IMAGES in engine.features(entry)
    images = await images_of(request).prepare(entry.id, accepts_images, convert.image_refs(body), ResizeOptions())
    return entry, convert.generation_request(body, entry, engine.settings, images)


@routes.post("/v1/messages", summary="Anthropic Messages (one message, or named SSE events with stream: true)")
async def create_message(body: MessagesRequest, request: Request) -> Response:
    entry, gen = await _neutral(body, request)
    # Also while it waits in the model's queue: a client that leaves then is dropped before its prompt is read.
    active = await unless_disconnected(request, engine_of(request).generate(entry, gen))
    if body.stream:
        return StreamedResponse(_events(gen, active), media_type="text/event-stream")
    output = await unless_disconnected(request, active.collect())
    reply = convert.message_response(
        gen,
        output.text,
        output.finish_reason,
        output.stats or GenerationStats(),
        output.calls,
        output.reasoning,
        output.stop_sequence,
    )
    return OrjsonResponse(reply)


async def _events(gen: GenerationRequest, active: ActiveGeneration) -> AsyncIterator[bytes]:
    encoder = BlockEncoder()
    try:
        yield named_event("message_start", convert.message_start(gen))
        yield PING
        async for chunk in active.chunks():
            for event in encoder.chunk(chunk):
                yield event
            if chunk.finish_reason is not None:
                return
    except HeylookError as exc:
        # Headers are gone already: report the failure as Anthropic's `error` event.
        yield anthropic_stream_error(exc)
    finally:
        active.close()


@routes.post("/v1/messages/count_tokens", summary="Count the prompt tokens of a Messages request")
async def count_tokens(body: CountTokensRequest, request: Request) -> Response:
    entry, gen = await _neutral(body, request)
    count = await unless_disconnected(request, engine_of(request).count_prompt_tokens(entry, gen))
    return OrjsonResponse({"input_tokens": count})
