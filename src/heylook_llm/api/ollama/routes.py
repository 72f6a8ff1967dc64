"""Ollama HTTP routes for generation and embeddings: parse, convert, run through the router, encode (NDJSON or
one JSON body). The model-management routes are in `model_routes`; `routes` serves both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from heylook_llm.api import limits
from heylook_llm.api.disconnect import StreamedResponse, unless_disconnected
from heylook_llm.api.embedding_vectors import shortened
from heylook_llm.api.framing import OrjsonResponse, ndjson_line
from heylook_llm.api.ollama import convert, refusals
from heylook_llm.api.ollama.dialect import OllamaRoute, ollama_stream_error
from heylook_llm.api.ollama.model_routes import model_routes
from heylook_llm.api.ollama.schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerationPiece,
    Options,
    error_schema,
)
from heylook_llm.api.state import engine_of, field_log_of, images_of
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.service import ActiveGeneration, Engine
from heylook_llm.errors import HeylookError, InvalidRequest
from heylook_llm.types import Feature, FinishReason, GenerationChunk, GenerationStats, ImageData

NDJSON = "application/x-ndjson"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_schema("invalid request: options.temperature: Input should be greater than or equal to 0"),
    404: error_schema("model 'nope' not found; available models: demo-gguf"),
    500: error_schema("model 'demo-gguf' failed to load: ..."),
    503: error_schema("model 'demo-gguf' has 64 requests queued; try again shortly"),
}
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "model": GenerationPiece,
        "description": "With stream (the default): NDJSON, one piece per line, the last with done true; "
        'a failure after the first line is a line {"error": "..."}. Without stream: one JSON object.',
        "content": {NDJSON: {}},
    }
}

routes = APIRouter(tags=["Ollama"], responses=ERRORS, route_class=OllamaRoute)
routes.include_router(model_routes)


def _entry(engine: Engine, name: str) -> ModelEntry:
    return engine.resolve(name, latest_tag=True)


async def _sized_entry(engine: Engine, name: str, options: Options | None) -> ModelEntry:
    """The model, able to hold `options.num_ctx` tokens (reloaded with the larger context when it must be)."""
    entry = _entry(engine, name)
    num_ctx = options.num_ctx if options is not None else None
    return await engine.with_context(entry, num_ctx, param="options.num_ctx")


def _single(payload: dict[str, Any], stream: bool) -> Response:
    """One object, as a one-line NDJSON stream when the client asked for a stream."""
    if stream:
        return Response(ndjson_line(payload), media_type=NDJSON)
    return OrjsonResponse(payload)


async def _load_only(engine: Engine, entry: ModelEntry, body: ChatRequest | GenerateRequest) -> Response:
    """Ollama's empty request: load the model (keep_alive 0: unload it) and answer done."""
    if body.keep_alive == 0:
        await engine.expire(entry)
    else:
        await engine.load(entry, keep_alive=body.keep_alive)
    chat = isinstance(body, ChatRequest)
    return _single(convert.load_reply(body.model, chat=chat, unloaded=body.keep_alive == 0), body.stream)


async def _prepare_images(
    request: Request, engine: Engine, entry: ModelEntry, body: ChatRequest | GenerateRequest
) -> list[ImageData]:
    refs = convert.image_refs(body)
    accepts = Feature.IMAGES in engine.features(entry)
    return await images_of(request).prepare(entry.id, accepts, refs, body.resize_options())


async def _lines(
    active: ActiveGeneration,
    piece: Callable[[GenerationChunk], dict[str, Any]],
    final: Callable[[FinishReason | None, GenerationStats, list[int] | None], dict[str, Any]],
) -> AsyncIterator[bytes]:
    try:
        async for chunk in active.chunks():
            # A chunk whose text is still held back may carry reasoning or logprobs of its tokens.
            if chunk.text or chunk.tool_calls or chunk.reasoning or chunk.logprobs:
                yield ndjson_line(piece(chunk))
            if chunk.finish_reason is not None:
                yield ndjson_line(final(chunk.finish_reason, chunk.stats or GenerationStats(), chunk.context_tokens))
    except HeylookError as exc:
        # The 200 and earlier lines are gone already: Ollama reports a late failure as an error line.
        yield ollama_stream_error(exc)
    finally:
        active.close()


@routes.post("/api/chat", summary="Chat (NDJSON stream by default)", responses=STREAM_DOC)
async def chat(body: ChatRequest, request: Request) -> Response:
    started = time.perf_counter()
    field_log_of(request).note("Ollama", refusals.check_generation(body))
    engine = engine_of(request)
    limits.check_messages(engine.settings.limits, body.messages)
    limits.check_stop(engine.settings.limits, body.options.stop if body.options else None, "options.stop")
    entry = await _sized_entry(engine, body.model, body.options)
    if not body.messages:
        return await _load_only(engine, entry, body)
    images = await _prepare_images(request, engine, entry, body)
    gen = convert.chat_request(body, entry, engine.settings, images)
    # Also while it waits in the model's queue: a client that leaves then is dropped before its prompt is read.
    active = await unless_disconnected(request, engine.generate(entry, gen, keep_alive=body.keep_alive))
    name = body.model
    if body.stream:

        def final(reason: FinishReason | None, stats: GenerationStats, _: list[int] | None) -> dict[str, Any]:
            return convert.chat_final(name, "", reason, stats, time.perf_counter() - started)

        def piece(chunk: GenerationChunk) -> dict[str, Any]:
            return convert.chat_piece(
                name, chunk.text, chunk.tool_calls, thinking=chunk.reasoning, logprobs=chunk.logprobs
            )

        return StreamedResponse(_lines(active, piece, final), media_type=NDJSON)
    output = await unless_disconnected(request, active.collect())
    stats = output.stats or GenerationStats()
    seconds = time.perf_counter() - started
    reply = convert.chat_final(
        name,
        output.text,
        output.finish_reason,
        stats,
        seconds,
        output.calls,
        thinking=output.reasoning,
        logprobs=output.logprobs,
    )
    return OrjsonResponse(reply)


@routes.post("/api/generate", summary="Complete a prompt (NDJSON stream by default)", responses=STREAM_DOC)
async def generate(body: GenerateRequest, request: Request) -> Response:
    started = time.perf_counter()
    field_log_of(request).note("Ollama", refusals.check_generation(body))
    engine = engine_of(request)
    limits.check_stop(engine.settings.limits, body.options.stop if body.options else None, "options.stop")
    entry = await _sized_entry(engine, body.model, body.options)
    if not body.prompt and not body.suffix and not body.images:
        return await _load_only(engine, entry, body)
    images = await _prepare_images(request, engine, entry, body)
    gen = convert.generate_request(body, entry, engine.settings, images)
    # Also while it waits in the model's queue: a client that leaves then is dropped before its prompt is read.
    active = await unless_disconnected(request, engine.generate(entry, gen, keep_alive=body.keep_alive))
    name = body.model
    if body.stream:

        def final(reason: FinishReason | None, stats: GenerationStats, context: list[int] | None) -> dict[str, Any]:
            return convert.generate_final(name, "", reason, stats, time.perf_counter() - started, context)

        def piece(chunk: GenerationChunk) -> dict[str, Any]:
            return convert.generate_piece(name, chunk.text, thinking=chunk.reasoning, logprobs=chunk.logprobs)

        return StreamedResponse(_lines(active, piece, final), media_type=NDJSON)
    output = await unless_disconnected(request, active.collect())
    reply = convert.generate_final(
        name,
        output.text,
        output.finish_reason,
        output.stats or GenerationStats(),
        time.perf_counter() - started,
        output.context_tokens,
        thinking=output.reasoning,
        logprobs=output.logprobs,
    )
    return OrjsonResponse(reply)


@routes.post("/api/embed", summary="Embeddings for a text or a list of texts", response_model=EmbedResponse)
async def embed(body: EmbedRequest, request: Request) -> Response:
    started = time.perf_counter()
    engine = engine_of(request)
    entry = await _sized_entry(engine, body.model, body.options)
    if isinstance(body.input, str):
        inputs = [body.input] if body.input else []
    else:
        inputs = list(body.input)
        if any(not text for text in inputs):
            raise InvalidRequest("input: the list holds an empty string", param="input")
    field_log_of(request).note("Ollama", refusals.check_embed(body))
    limits.check_prompts(engine.settings.limits, len(inputs), "input")
    work = engine.embed(entry, inputs, truncate=body.truncate, keep_alive=body.keep_alive)
    embedded = await unless_disconnected(request, work)
    result, load_seconds = embedded.result, embedded.load_seconds
    return OrjsonResponse(
        {
            "model": body.model,
            "embeddings": shortened(result.vectors, body.dimensions),
            "total_duration": convert.nanoseconds(time.perf_counter() - started),
            "load_duration": convert.nanoseconds(load_seconds),
            "prompt_eval_count": result.prompt_tokens,
        }
    )


@routes.post("/api/embeddings", summary="Embedding for one text (the older endpoint; prefer /api/embed)")
async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    field_log_of(request).note("Ollama", refusals.check_embed(body))
    engine = engine_of(request)
    entry = await _sized_entry(engine, body.model, body.options)
    inputs = [body.prompt] if body.prompt else []
    work = engine.embed(entry, inputs, truncate=True, keep_alive=body.keep_alive)
    vectors = (await unless_disconnected(request, work)).result.vectors
    return OrjsonResponse({"embedding": vectors[0] if vectors else []})
