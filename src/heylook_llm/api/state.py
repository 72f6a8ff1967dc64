"""Typed access to what the app keeps on `app.state` (set up in app.py): the engine façade, the image pipeline,
the unknown-field log and the metrics. Dialects reach the engine only through `engine_of`."""

from __future__ import annotations

from starlette.requests import Request

from heylook_llm.api.fields import UnknownFieldLog
from heylook_llm.api.images import ImagePipeline
from heylook_llm.engine.metrics import MetricsRecorder
from heylook_llm.engine.service import Engine


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def images_of(request: Request) -> ImagePipeline:
    images: ImagePipeline = request.app.state.images
    return images


def field_log_of(request: Request) -> UnknownFieldLog:
    log: UnknownFieldLog = request.app.state.field_log
    return log


def metrics_of(request: Request) -> MetricsRecorder:
    metrics: MetricsRecorder = request.app.state.metrics
    return metrics


def stopping(request: Request) -> bool:
    """True once the server was told to stop (api/serving.py): streams that never end on their own end now."""
    return bool(getattr(request.app.state, "stopping", False))
