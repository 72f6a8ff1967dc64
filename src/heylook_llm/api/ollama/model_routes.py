"""Ollama HTTP routes about models: list, show, running, copy, create, delete; pull and push answer how to add
models instead. Also `GET /` and /api/version, which clients use to find an Ollama server."""

from __future__ import annotations

import logging
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import PlainTextResponse, Response

from heylook_llm.api import limits
from heylook_llm.api.framing import OrjsonResponse, ndjson_line
from heylook_llm.api.ollama import convert, model_facts, refusals
from heylook_llm.api.ollama.dialect import OllamaRoute
from heylook_llm.api.ollama.schemas import (
    CopyRequest,
    CreateRequest,
    ListResponse,
    ModelRequest,
    Options,
    ProcessResponse,
    PullRequest,
    ShowResponse,
    VersionResponse,
)
from heylook_llm.api.state import engine_of, field_log_of
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.features import capability_names
from heylook_llm.engine.service import Engine
from heylook_llm.errors import CapabilityError, InvalidRequest, ModelLoadError, ModelNotFound
from heylook_llm.model_info import ModelFileInfo

log = logging.getLogger(__name__)

OLLAMA_API_VERSION = "0.12.0"
"""The Ollama version whose API this server follows (clients compare it to enable features)."""
NDJSON = "application/x-ndjson"
HOW_TO_ADD = (
    "heylookllm serves the models listed in its models.yaml and does not download from a registry; "
    "add a model with `heylookllm import PATH` or by editing models.yaml"
)

model_routes = APIRouter(route_class=OllamaRoute)

STATUS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": 'Done: `{"status": "success"}`', "content": {"application/json": {}}}
}
STREAMED_STATUS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'With stream (the default): NDJSON status lines, the last `{"status": "success"}`; '
        "without stream: that one JSON object.",
        "content": {"application/json": {}, NDJSON: {}},
    }
}


async def _facts(engine: Engine, entry: ModelEntry) -> tuple[ModelFileInfo, str]:
    """File facts and digest, read off the event loop (hashing a large file takes seconds, once)."""
    return await engine.file_info(entry), await engine.digest(entry)


def _template(entry: ModelEntry, info: ModelFileInfo) -> str:
    """The chat template requests are formatted with (models.yaml overrides the file's own)."""
    override = entry.config.template_override()
    return override if override is not None else (info.chat_template or "")


@model_routes.get("/", response_class=PlainTextResponse, summary="Ollama is running")
@model_routes.head("/", include_in_schema=False)
async def root() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@model_routes.get("/api/version", response_model=VersionResponse, summary="The Ollama API version")
@model_routes.head("/api/version", include_in_schema=False)
async def version() -> Response:
    return OrjsonResponse({"version": OLLAMA_API_VERSION})


@model_routes.get("/api/tags", response_model=ListResponse, summary="Models served")
@model_routes.head("/api/tags", include_in_schema=False)
async def tags(request: Request) -> Response:
    if request.method == "HEAD":
        return Response(media_type="application/json")
    engine = engine_of(request)
    listed: list[dict[str, Any]] = []
    for entry in engine.models():
        remote = engine.upstream_status(entry)
        if remote is not None:
            listed.append(model_facts.remote_listed(remote))
            continue
        try:
            info, digest = await _facts(engine, entry)
        except ModelLoadError as exc:
            log.warning("/api/tags leaves out %s", exc.message)
            continue
        listed.append(model_facts.listed_model(entry, info, digest))
    return OrjsonResponse({"models": listed})


@model_routes.post("/api/show", response_model=ShowResponse, summary="Details, metadata and template of a model")
async def show(body: ModelRequest, request: Request) -> Response:
    field_log_of(request).note("Ollama", refusals.unknown_fields(body))
    engine = engine_of(request)
    entry = engine.resolve(body.model, latest_tag=True)
    remote = engine.upstream_status(entry)
    if remote is not None:
        return OrjsonResponse(model_facts.remote_shown(remote, capability_names(engine.features(entry))))
    info = await engine.file_info(entry, large_arrays=body.verbose)
    payload: dict[str, Any] = {
        "modelfile": model_facts.modelfile_text(entry, info),
        "parameters": model_facts.parameters_text(entry),
        "template": _template(entry, info),
        "details": model_facts.details(info, entry),
        "model_info": model_facts.model_info(info),
        "capabilities": capability_names(engine.features(entry, info)),
        "modified_at": convert.timestamp(info.modified_at),
    }
    if entry.system:
        payload["system"] = entry.system
    return OrjsonResponse(payload)


@model_routes.get("/api/ps", response_model=ProcessResponse, summary="Models loaded now, with their expiry")
async def running(request: Request) -> Response:
    engine = engine_of(request)
    rows: list[dict[str, Any]] = []
    for model in engine.loaded():
        facts = model.facts
        try:
            info, digest = await _facts(engine, model.entry)
        except ModelLoadError as exc:
            log.warning("/api/ps: %s", exc.message)
            continue
        rows.append(
            model_facts.running_model(
                model.entry,
                info,
                digest,
                # Ollama's size is the model's whole memory (weights, KV cache, buffers): measured after load.
                size_bytes=model.footprint.total_bytes or facts.size_bytes or info.size_bytes,
                accelerator_bytes=model.footprint.accelerator_bytes or facts.accelerator_bytes,
                expires_at=model.expires_at,
                context_length=facts.context_length or info.context_length,
            )
        )
    rows.extend(model_facts.remote_running(status) for status in engine.remote())
    return OrjsonResponse({"models": rows})


@model_routes.post(
    "/api/copy", summary="Copy a model: a new name for the same weights (models.yaml alias)", responses=STATUS_DOC
)
async def copy_model(body: CopyRequest, request: Request) -> Response:
    field_log_of(request).note("Ollama", refusals.unknown_fields(body))
    engine = engine_of(request)
    source = engine.resolve(body.source, latest_tag=True)
    await engine.copy_model(source, convert.new_model_id(body.destination, param="destination"))
    return OrjsonResponse({"status": "success"})


@model_routes.delete(
    "/api/delete", summary="Remove a model from models.yaml (its files are kept)", responses=STATUS_DOC
)
async def delete_model(body: ModelRequest, request: Request) -> Response:
    field_log_of(request).note("Ollama", refusals.unknown_fields(body))
    engine = engine_of(request)
    await engine.delete_model(engine.resolve(body.model, latest_tag=True))
    # Ollama answers an empty 200; a JSON body is what the schema promises, and Ollama's clients read only the status.
    return OrjsonResponse({"status": "success"})


def _checked_jinja(template: str) -> str:
    """The template if it parses as Jinja (the engine then compiles it in the model's sandbox before storing it:
    compiling here, outside that sandbox, would fold constants such as `'a' * 10**10`)."""
    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidRequest(
            f"template must be a Jinja chat template (as in tokenizer_config.json); Go templates are not run "
            f"here: {exc.message}",
            param="template",
        ) from exc
    except RecursionError:
        raise InvalidRequest("template nests too deeply", param="template") from None
    return template


@model_routes.post(
    "/api/create", summary="Create a variant of a model: same weights, other defaults", responses=STREAMED_STATUS_DOC
)
async def create_model(body: CreateRequest, request: Request) -> Response:
    if body.files or body.adapters:
        raise CapabilityError(f"creating a model from uploaded files or adapters is not supported; {HOW_TO_ADD}")
    if body.quantize:
        raise CapabilityError("quantize is not supported: quantize with llama.cpp's tools, then import the file")
    if body.messages:
        raise CapabilityError("messages (a stored conversation) are not supported in models.yaml", param="messages")
    if not body.from_:
        raise InvalidRequest("from is required: the name of the model to make the variant of", param="from")
    engine = engine_of(request)
    base = engine.resolve(body.from_, latest_tag=True)
    try:
        options = Options.model_validate(body.parameters or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"invalid request: parameters: {problems}", param="parameters") from exc
    field_log_of(request).note("Ollama", refusals.check_create(body, options))
    limits.check_stop(engine.settings.limits, options.stop, "parameters.stop")
    sampling = convert.sampling(options, where="parameters")
    template = _checked_jinja(body.template) if body.template is not None else None
    await engine.add_variant(
        base,
        convert.new_model_id(body.model),
        system=body.system,
        sampling=sampling,
        chat_template=template,
        context_length=options.num_ctx,
    )
    statuses = [f"using the weights of {convert.display_name(base.id)}", "writing models.yaml", "success"]
    if body.stream:
        return Response(b"".join(ndjson_line({"status": s}) for s in statuses), media_type=NDJSON)
    return OrjsonResponse({"status": "success"})


@model_routes.post(
    "/api/pull",
    summary="Answers success for a model already served; nothing is downloaded",
    responses=STREAMED_STATUS_DOC,
)
async def pull(body: PullRequest, request: Request) -> Response:
    field_log_of(request).note("Ollama", refusals.unknown_fields(body))
    try:
        engine_of(request).resolve(body.model, latest_tag=True)
    except ModelNotFound:
        return OrjsonResponse({"error": f"model '{body.model}' is not available: {HOW_TO_ADD}"}, status_code=404)
    if body.stream:
        return Response(ndjson_line({"status": "success"}), media_type=NDJSON)
    return OrjsonResponse({"status": "success"})


@model_routes.post("/api/push", summary="Not supported (400): there is no registry to push to")
async def push(body: PullRequest) -> Response:
    # 400 as for every other field or feature this server does not implement (a 5xx would say the server broke).
    raise CapabilityError("heylookllm does not push models to a registry")


@model_routes.head("/api/blobs/{digest}", summary="No blobs are stored here (always 404)")
async def blob_exists(digest: str) -> Response:
    return Response(status_code=404, media_type="application/json")


@model_routes.post("/api/blobs/{digest}", summary="Not supported (400): models are added with heylookllm import")
async def blob_upload(digest: str) -> Response:
    raise CapabilityError(f"uploading model files is not supported; {HOW_TO_ADD}")
