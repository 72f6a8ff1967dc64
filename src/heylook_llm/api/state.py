"""Typed access to what the app keeps on `app.state` (set up in app.py's lifespan)."""

from __future__ import annotations

from starlette.requests import Request

from heylook_llm.api.fields import UnknownFieldLog
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.router import ModelRouter


def router_of(request: Request) -> ModelRouter:
    router: ModelRouter = request.app.state.router
    return router


def settings_of(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def field_log_of(request: Request) -> UnknownFieldLog:
    log: UnknownFieldLog = request.app.state.field_log
    return log
