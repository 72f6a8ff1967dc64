"""Server-level routes that belong to neither dialect: measured performance, Prometheus metrics, capabilities."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from heylook_llm.api.capabilities import capabilities
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.openai.schemas import MAX_CHOICES
from heylook_llm.api.state import engine_of, images_of, metrics_of
from heylook_llm.engine.performance import performance_report

routes = APIRouter(tags=["Server"])


@routes.get("/v1/performance", summary="Measured figures per model and overall, with a summary paragraph")
async def performance(request: Request) -> Response:
    return OrjsonResponse(performance_report(metrics_of(request)))


@routes.get("/metrics", summary="The same figures in Prometheus text format")
async def metrics(request: Request) -> Response:
    return Response(metrics_of(request).prometheus_text(), media_type=CONTENT_TYPE_LATEST)


@routes.get("/v1/capabilities", summary="What this server offers now: APIs, backends, model features, limits")
async def server_capabilities(request: Request) -> Response:
    return OrjsonResponse(await capabilities(engine_of(request), images_of(request), MAX_CHOICES))
