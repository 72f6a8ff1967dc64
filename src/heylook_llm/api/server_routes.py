"""Server-level routes that belong to neither dialect: readiness, measured performance, Prometheus metrics,
capabilities."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import Response

from heylook_llm.api.capabilities import capabilities
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.openai.schemas import MAX_CHOICES
from heylook_llm.api.state import engine_of, images_of, metrics_of
from heylook_llm.engine.lifecycle import ReadyState
from heylook_llm.engine.performance import performance_report


class ReadyStatus(BaseModel):
    status: str
    """ready, loading, failed or shutting_down."""
    model: str | None = None
    """The start-up model, if there is one."""
    reason: str | None = None
    """Why the server is not ready."""


routes = APIRouter(tags=["Server"])

READY_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready: the start-up model is loaded (or there is none)", "model": ReadyStatus},
    503: {
        "description": "Not ready: the start-up model is loading or failed to load, or the server is shutting down",
        "model": ReadyStatus,
    },
}


@routes.get(
    "/ready",
    summary="Readiness: 503 until the start-up model is loaded",
    description="`/health` answers as soon as the process serves HTTP (liveness); `/ready` answers 200 only once "
    "the start-up model (`--model-id` or `default_model`) is loaded, with the reason while it is not.",
    response_model=ReadyStatus,
    responses=READY_DOC,
)
async def ready(request: Request) -> Response:
    readiness = engine_of(request).lifecycle.readiness
    body = ReadyStatus(status=readiness.state.value, model=readiness.model_id, reason=readiness.reason)
    payload = body.model_dump(exclude_none=True)
    if readiness.ready:
        return OrjsonResponse(payload)
    headers = {"Retry-After": "1"} if readiness.state is ReadyState.LOADING else None
    return OrjsonResponse(payload, status_code=503, headers=headers)


@routes.get("/v1/performance", summary="Measured figures per model and overall, with a summary paragraph")
async def performance(request: Request) -> Response:
    return OrjsonResponse(performance_report(metrics_of(request)))


@routes.get(
    "/metrics",
    summary="The same figures in Prometheus text format",
    responses={200: {"description": "Prometheus text exposition format", "content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    return Response(metrics_of(request).prometheus_text(), media_type=CONTENT_TYPE_LATEST)


@routes.get("/v1/capabilities", summary="What this server offers now: APIs, backends, model features, limits")
async def server_capabilities(request: Request) -> Response:
    return OrjsonResponse(await capabilities(engine_of(request), images_of(request), MAX_CHOICES))
