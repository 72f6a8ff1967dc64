"""OpenAI Responses API routes: create (JSON or typed SSE events), retrieve and delete stored responses."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from heylook_llm.api import limits
from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.api.errors import error_response, status_and_code
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.images import ResizeOptions
from heylook_llm.api.openai import responses_convert as convert
from heylook_llm.api.openai import responses_refusals as refusals
from heylook_llm.api.openai.dialect import OpenAIRoute
from heylook_llm.api.openai.responses_schemas import ResponsesRequest
from heylook_llm.api.openai.responses_store import ResponseStore
from heylook_llm.api.openai.responses_stream import ResponseEvents
from heylook_llm.api.openai.schemas import error_schema
from heylook_llm.api.state import engine_of, field_log_of, images_of
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.service import ActiveGeneration
from heylook_llm.errors import HeylookError, InvalidRequest, UnsupportedParameter
from heylook_llm.types import Feature, GenerationRequest, GenerationStats

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {code: error_schema() for code in (400, 404, 413, 500, 503)}
routes = APIRouter(tags=["OpenAI Responses"], responses=ERRORS, route_class=OpenAIRoute)


def store_of(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.response_store
    return store


def _not_found(request: Request, message: str, param: str | None, code: str | None) -> Response:
    return error_response(request, 404, message, type_="invalid_request_error", param=param, code=code)


async def _keep(store: ResponseStore, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
    """Store a finished response; a failing disk costs the stored copy, never the answer."""
    try:
        await store.put(response, conversation)
    except (sqlite3.Error, OSError) as exc:
        log.warning("response %s was not stored: %s", response["id"], exc)


@dataclass(frozen=True, slots=True)
class _Prepared:
    entry: ModelEntry
    gen: GenerationRequest
    conversation: list[dict[str, Any]]
    """The stored conversation of previous_response_id, then this request's input items (wire JSON)."""


async def _prepare(body: ResponsesRequest, request: Request) -> _Prepared | Response:
    """Checks, the conversation (stored history first), model, images and the neutral request; a Response when
    previous_response_id names nothing stored."""
    field_log_of(request).note("OpenAI", refusals.check_request(body))
    engine = engine_of(request)
    store = store_of(request)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        if not store.enabled:
            raise InvalidRequest(
                "previous_response_id: stored responses are turned off on this server (--no-response-store); "
                "send the whole conversation as input",
                param="previous_response_id",
            )
        found = await store.get(body.previous_response_id)
        if found is None:
            return _not_found(
                request,
                f"Previous response with id '{body.previous_response_id}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        history = found.conversation
    new_items = body.items()
    items = [*convert.stored_items(history), *new_items]
    if not items:
        raise InvalidRequest("input: empty; send a text or at least one item", param="input")
    labels = [f"previous_response_id item {i}" for i in range(len(history))]
    labels += [f"input[{i}]" for i in range(len(new_items))]
    limits.check_messages(engine.settings.limits, items, "input")
    entry = engine.resolve(body.model)
    accepts_images = Feature.IMAGES in engine.features(entry)
    refs = convert.image_refs(items, labels)
    images = await images_of(request).prepare(entry.id, accepts_images, refs, ResizeOptions())
    gen = convert.generation_request(body, items, entry, engine.settings, images)
    return _Prepared(entry, gen, [*history, *(convert.item_json(item) for item in new_items)])


@routes.post("/v1/responses", summary="Create a model response (Responses API; JSON or typed SSE events)")
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    prepared = await _prepare(body, request)
    if isinstance(prepared, Response):
        return prepared
    engine, store = engine_of(request), store_of(request)
    entry, gen, conversation = prepared.entry, prepared.gen, prepared.conversation
    created_at = int(time.time())
    keep = body.store and store.enabled

    def build(
        status: str, output: list[dict[str, Any]], stats: GenerationStats | None, error: dict[str, str] | None
    ) -> dict[str, Any]:
        return convert.response_object(
            body, gen, created_at, status=status, output=output, stats=stats, stored=keep, error=error
        )

    # Also while it waits in the model's queue: a client that leaves then is dropped before its prompt is read.
    active = await unless_disconnected(request, engine.generate(entry, gen))
    if body.stream:
        events = _events(active, ResponseEvents(build), store if keep else None, conversation)
        return StreamedResponse(events, media_type="text/event-stream")
    output = await unless_disconnected(request, active.collect())
    items_out = convert.output_items(output.text, output.calls, output.reasoning, output.finish_reason)
    reply = build(convert.status_of(output.finish_reason), items_out, output.stats or GenerationStats(), None)
    if keep:
        await _keep(store, reply, [*conversation, *items_out])
    return OrjsonResponse(reply)


async def _events(
    active: ActiveGeneration,
    encoder: ResponseEvents,
    store: ResponseStore | None,
    conversation: list[dict[str, Any]],
) -> AsyncIterator[bytes]:
    try:
        for event in encoder.start():
            yield event
        async for chunk in active.chunks():
            for event in encoder.chunk(chunk):
                yield event
            if chunk.finish_reason is not None:
                events = encoder.finish(chunk.finish_reason, chunk.stats or GenerationStats())
                if store is not None and encoder.final is not None:
                    # Stored before the last event, so that a client chaining at once finds it.
                    await _keep(store, encoder.final, [*conversation, *encoder.output])
                for event in events:
                    yield event
                return
    except HeylookError as exc:
        # Headers are gone already: OpenAI's `error` event, then `response.failed`.
        _, _, code = status_and_code(exc)
        for event in encoder.fail(code, exc.message, exc.param):
            yield event
    finally:
        active.close()


@routes.post("/v1/responses/input_tokens", summary="Count the input tokens of a Responses request")
async def count_input_tokens(body: ResponsesRequest, request: Request) -> Response:
    prepared = await _prepare(body, request)
    if isinstance(prepared, Response):
        return prepared
    count = await unless_disconnected(request, engine_of(request).count_prompt_tokens(prepared.entry, prepared.gen))
    return OrjsonResponse({"object": "response.input_tokens", "input_tokens": count})


@routes.get("/v1/responses/{response_id}", summary="A stored response")
async def get_response(response_id: str, request: Request, stream: bool = False) -> Response:
    if stream:
        raise UnsupportedParameter(
            "'stream' is not supported by this server for stored responses: they are finished; GET without it",
            param="stream",
        )
    found = await store_of(request).get(response_id) if store_of(request).enabled else None
    if found is None:
        return _not_found(request, f"Response with id '{response_id}' not found.", "response_id", None)
    return OrjsonResponse(found.response)


@routes.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> Response:
    store = store_of(request)
    if not (store.enabled and await store.delete(response_id)):
        return _not_found(request, f"Response with id '{response_id}' not found.", "response_id", None)
    return OrjsonResponse({"id": response_id, "object": "response", "deleted": True})
