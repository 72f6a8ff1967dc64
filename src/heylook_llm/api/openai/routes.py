"""OpenAI HTTP routes: parse, convert, run through the router, encode (JSON or SSE)."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from heylook_llm.api import limits
from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.api.embedding_vectors import shortened
from heylook_llm.api.framing import SSE_DONE, OrjsonResponse, sse_event
from heylook_llm.api.openai import batch, convert, refusals
from heylook_llm.api.openai import completions as completions_route
from heylook_llm.api.openai.dialect import OpenAIRoute, openai_stream_error
from heylook_llm.api.openai.image_parts import Upload, image_refs, parse_multipart_chat
from heylook_llm.api.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    ModelMemory,
    error_schema,
)
from heylook_llm.api.state import engine_of, field_log_of, images_of
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.features import capability_names
from heylook_llm.engine.service import ActiveGeneration, Engine
from heylook_llm.errors import HeylookError, InvalidRequest
from heylook_llm.types import Feature, GenerationRequest, GenerationStats

ERRORS: dict[int | str, dict[str, Any]] = {code: error_schema() for code in (400, 404, 500, 503, 507)}
routes = APIRouter(tags=["OpenAI"], responses=ERRORS, route_class=OpenAIRoute)


async def _card(entry: ModelEntry, engine: Engine) -> ModelCard:
    memory = None
    if entry.upstream is None:
        footprint = await engine.footprint(entry)
        memory = ModelMemory(
            # Measured only when these weights are loaded with this entry's context.
            loaded=footprint.measured_bytes is not None,
            estimated_bytes=footprint.estimate_bytes,
            weights_bytes=footprint.weights_bytes,
            kv_cache_bytes=footprint.kv_bytes,
            kv_cache_tokens=footprint.kv_tokens,
            projector_bytes=footprint.projector_bytes,
            measured_bytes=footprint.measured_bytes,
            accelerator_bytes=footprint.accelerator_bytes,
        )
    return ModelCard(
        id=entry.id,
        created=engine.files_modified_at(entry),
        provider=entry.provider,
        description=entry.description or None,
        capabilities=capability_names(engine.features(entry)),
        memory=memory,
    )


@routes.get("/v1/models", response_model=ModelList, summary="List the enabled models")
async def list_models(request: Request) -> ModelList:
    engine = engine_of(request)
    return ModelList(data=[await _card(e, engine) for e in engine.models()])


@routes.get("/v1/models/{model_id:path}", response_model=ModelCard, summary="One model")
async def get_model(model_id: str, request: Request) -> ModelCard:
    engine = engine_of(request)
    return await _card(engine.resolve(model_id), engine)


@routes.post("/v1/chat/completions", summary="Chat completion (JSON or SSE stream)")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _chat(body, request, [])


@routes.post(
    "/v1/chat/completions/multipart",
    summary="Chat completion with uploaded images (multipart form; JSON or SSE stream)",
    description="Form fields as in the JSON body (`messages` as a JSON string) plus `images` files; each "
    '`{"type": "image_url", "image_url": {"url": "__RAW_IMAGE__"}}` part takes the next file in order.',
)
async def chat_completions_multipart(request: Request) -> Response:
    body, uploads = await parse_multipart_chat(request, images_of(request).limits)
    return await _chat(body, request, uploads)


async def _chat(body: ChatCompletionRequest, request: Request, uploads: list[Upload]) -> Response:
    field_log_of(request).note("OpenAI", refusals.check_chat(body))
    engine = engine_of(request)
    limits.check_messages(engine.settings.limits, body.messages)
    limits.check_stop(engine.settings.limits, body.stop)
    entry = await engine.with_context(engine.resolve(body.model), body.num_ctx, param="num_ctx")
    refs = image_refs(body, uploads)
    accepts_images = Feature.IMAGES in engine.features(entry)
    images = await images_of(request).prepare(entry.id, accepts_images, refs, body.resize_options())
    gen = convert.chat_request(body, entry, engine.settings, images)
    if batch.runs_several(body):
        return await batch.respond(request, engine.starter(entry), body, gen)
    # Also while it waits in the model's queue: a client that leaves then is dropped before its prompt is read.
    active = await unless_disconnected(request, engine.generate(entry, gen))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamedResponse(_chat_events(gen, active, include_usage), media_type="text/event-stream")
    output = await unless_disconnected(request, active.collect())
    reply = convert.chat_response(
        gen,
        output.text,
        output.finish_reason,
        output.stats or GenerationStats(),
        output.calls,
        reasoning=output.reasoning,
        logprobs=output.logprobs,
    )
    return OrjsonResponse(reply)


async def _chat_events(gen: GenerationRequest, active: ActiveGeneration, include_usage: bool) -> AsyncIterator[bytes]:
    created = int(time.time())
    try:
        yield sse_event(convert.chat_chunk(gen, created, {"role": "assistant", "content": ""}))
        async for chunk in active.chunks():
            for delta, logprobs in convert.chat_deltas(gen, chunk):
                yield sse_event(convert.chat_chunk(gen, created, delta, logprobs=logprobs))
            if chunk.tool_calls:
                delta = {"tool_calls": convert.tool_call_deltas(chunk.tool_calls)}
                yield sse_event(convert.chat_chunk(gen, created, delta))
            if chunk.finish_reason is not None:
                yield sse_event(convert.chat_chunk(gen, created, {}, chunk.finish_reason))
                if include_usage:
                    stats = [chunk.stats or GenerationStats()]
                    yield sse_event(convert.usage_chunk(gen, created, "chat.completion.chunk", stats))
        yield SSE_DONE
    except HeylookError as exc:
        # Headers are gone already: report the failure as an error event, as OpenAI does mid-stream.
        yield openai_stream_error(exc)
    finally:
        active.close()


@routes.post("/v1/completions", summary="Text completion for a prompt or a list of prompts")
async def completions(body: CompletionRequest, request: Request) -> Response:
    field_log_of(request).note("OpenAI", refusals.check_completion(body))
    engine = engine_of(request)
    limits.check_prompts(engine.settings.limits, len(body.texts()), "prompt")
    limits.check_stop(engine.settings.limits, body.stop)
    entry = await engine.with_context(engine.resolve(body.model), body.num_ctx, param="num_ctx")
    gens = convert.completion_requests(body, entry, engine.settings)
    return await completions_route.respond(request, engine.starter(entry), body, gens)


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


@routes.post("/v1/embeddings", summary="Embeddings from an embedding model")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    field_log_of(request).note("OpenAI", refusals.check_embedding(body))
    inputs = body.inputs()
    if not inputs or any(not item for item in inputs):
        raise InvalidRequest(
            "input must be a non-empty string, a list of non-empty strings or non-empty lists of token ids",
            param="input",
        )
    engine = engine_of(request)
    limits.check_prompts(engine.settings.limits, len(inputs), "input")
    embedded = await engine.embed(engine.resolve(body.model), inputs)
    result = embedded.result
    vectors = shortened(result.vectors, body.dimensions)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return OrjsonResponse(
        {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )
