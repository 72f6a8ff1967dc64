"""Server-level routes that belong to neither dialect: measured performance, Prometheus metrics, capabilities."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from heylook_llm.api.capabilities import BackendProbe, capabilities
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.openai.schemas import MAX_CHOICES
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.metrics import MetricsRecorder
from heylook_llm.engine.performance import performance_report
from heylook_llm.engine.router import ModelRouter

routes = APIRouter(tags=["Server"])


def _metrics(request: Request) -> MetricsRecorder:
    metrics: MetricsRecorder = request.app.state.metrics
    return metrics


@routes.get("/v1/performance", summary="Measured figures per model and overall, with a summary paragraph")
async def performance(request: Request) -> Response:
    return OrjsonResponse(performance_report(_metrics(request)))


@routes.get("/metrics", summary="The same figures in Prometheus text format")
async def metrics(request: Request) -> Response:
    return Response(_metrics(request).prometheus_text(), media_type=CONTENT_TYPE_LATEST)


@routes.get("/v1/capabilities", summary="What this server offers now: APIs, backends, model features, limits")
async def server_capabilities(request: Request) -> Response:
    state: Any = request.app.state
    router: ModelRouter = state.router
    settings: ServerSettings = state.settings
    probe: BackendProbe = state.backend_probe
    return OrjsonResponse(await capabilities(router, settings, probe, getattr(state, "images", None), MAX_CHOICES))
