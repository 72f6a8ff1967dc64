"""The FastAPI application: one app serving the OpenAI dialect, the Ollama dialect, or both."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from heylook_llm import __version__
from heylook_llm.api.anthropic.dialect import ANTHROPIC
from heylook_llm.api.anthropic.routes import routes as anthropic_routes
from heylook_llm.api.dialects import DialectRegistry
from heylook_llm.api.errors import install_error_handlers
from heylook_llm.api.fields import UnknownFieldLog
from heylook_llm.api.images import ImagePipeline
from heylook_llm.api.ollama.body_type import JsonBodyForOllama
from heylook_llm.api.ollama.dialect import OLLAMA
from heylook_llm.api.ollama.routes import routes as ollama_routes
from heylook_llm.api.openai.dialect import OPENAI
from heylook_llm.api.openai.rerank import rerank_routes
from heylook_llm.api.openai.responses_routes import routes as responses_routes
from heylook_llm.api.openai.responses_store import ResponseStore
from heylook_llm.api.openai.routes import routes as openai_routes
from heylook_llm.api.openapi import install_openapi
from heylook_llm.api.security import install_security
from heylook_llm.api.server_routes import routes as server_routes
from heylook_llm.api.ui import routes as ui
from heylook_llm.config.registry import Registry
from heylook_llm.config.settings import ServerSettings, user_cache_dir
from heylook_llm.engine.metrics import MetricsRecorder
from heylook_llm.engine.service import BackendFactory, Engine
from heylook_llm.model_info import ModelInfoReader

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings, registry: Registry, backend_factory: BackendFactory | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reader = ModelInfoReader(digest_cache_file=user_cache_dir() / "digests.json")
        engine = Engine(registry, settings, backend_factory, metrics=app.state.metrics, model_info=reader)
        app.state.engine = engine
        startup = settings.startup_model_id or registry.default_model
        # The start-up model, then the models marked `preload: true`.
        preload = asyncio.create_task(engine.preload(startup))
        try:
            yield
        finally:
            if preload is not None:
                preload.cancel()
            await engine.close()
            app.state.response_store.close()

    app = FastAPI(
        title="heylookllm",
        version=__version__,
        description="A local LLM server speaking the OpenAI, Anthropic and Ollama APIs, with llama.cpp and MLX "
        "backends. Web page (chat and live dashboard): [/ui](/ui).",
        lifespan=lifespan,
    )
    app.state.metrics = MetricsRecorder()
    app.state.field_log = UnknownFieldLog()
    app.state.images = ImagePipeline(settings.images)
    app.state.response_store = ResponseStore(settings.responses)
    # Anthropic's Messages API lives under /v1 beside OpenAI's, so it is served whenever OpenAI's is.
    dialects = ((OPENAI, settings.api.serves_openai), (ANTHROPIC, settings.api.serves_openai))
    served = [d for d, on in (*dialects, (OLLAMA, settings.api.serves_ollama)) if on]
    app.state.dialects = DialectRegistry(served, default=served[0])
    install_error_handlers(app)

    @app.get("/health", tags=["Server"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # Routes are matched in order, one by one: the dialects' first, since every generation goes through them. No
    # dialect path is also a server or web-page path with the same method.
    if settings.api.serves_openai:
        app.include_router(openai_routes)
        app.include_router(responses_routes)
        app.include_router(anthropic_routes)
        app.include_router(rerank_routes)
    if settings.api.serves_ollama:
        app.include_router(ollama_routes)
        app.add_middleware(JsonBodyForOllama)
    app.include_router(server_routes)
    app.include_router(ui.page_routes)
    app.include_router(ui.routes)
    install_security(app, settings, app.state.dialects)
    install_openapi(app)
    return app
