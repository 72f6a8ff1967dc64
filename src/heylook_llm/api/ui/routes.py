"""The web page and the endpoints behind its dashboard.

- `GET /ui` and `GET /ui/{asset}`: the page and its scripts and styles, files in `static/` beside this module.
  The page sends a strict Content-Security-Policy: only its own scripts run, so model output rendered as Markdown
  cannot run script even if escaping were ever wrong.
- `GET /v1/dashboard`: one snapshot (models, memory, live series, request history).
- `GET /v1/dashboard/stream`: Server-Sent Events, a snapshot first, then one `tick` a second.
- `POST /v1/models/{id}/load`, `POST /v1/models/{id}/unload`.

The page holds no secret: when the server wants an API key, the page asks the user and sends it as a header.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from heylook_llm import __version__
from heylook_llm.api.disconnect import StreamedResponse
from heylook_llm.api.errors import status_and_code
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.state import engine_of, stopping
from heylook_llm.engine.activity import HISTORY_SIZE
from heylook_llm.engine.service import Engine
from heylook_llm.errors import HeylookError, ModelNotFound

STATIC = Path(__file__).resolve().parent / "static"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
ASSETS: dict[str, Path] = {
    path.name: path for path in sorted(STATIC.iterdir()) if path.suffix in _MEDIA_TYPES and path.name != "index.html"
}
"""The files the page may load, by name: nothing else under /ui is served (no paths, no traversal)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change with the installed version; revalidating keeps an upgraded server from serving a stale page.
    "Cache-Control": "no-cache",
}


def _error(description: str) -> dict[str, Any]:
    example = {"error": {"message": "...", "type": "server_error", "param": None, "code": "model_load_failed"}}
    return {
        "description": f"{description} (OpenAI's error envelope; Ollama's {{\"error\": ...}} when only the Ollama "
        "API is served)",
        "content": {"application/json": {"example": example}},
    }


page_routes = APIRouter(tags=["Web page"])
log = logging.getLogger(__name__)

routes = APIRouter(tags=["Dashboard"])


@page_routes.get(
    "/ui",
    summary="The web page: chat with any model, watch and manage the server",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}, "description": "The page (its scripts load from /ui/...)"}},
)
async def page() -> Response:
    return FileResponse(STATIC / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_PAGE_HEADERS)


@page_routes.get("/ui/", include_in_schema=False)
async def page_with_slash() -> Response:
    return RedirectResponse("/ui")


@page_routes.get("/ui/{asset}", include_in_schema=False)
async def asset(asset: str) -> Response:
    path = ASSETS.get(asset)
    if path is None:
        return Response(status_code=404, content=b"not found", media_type="text/plain")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_PAGE_HEADERS)


# --- dashboard data ---------------------------------------------------------------------------------------
def _snapshot(engine: Engine) -> dict[str, Any]:
    return {
        "object": "dashboard",
        "time": time.time(),
        "version": __version__,
        "uptime_seconds": engine.metrics.uptime_seconds,
        "models": engine.dashboard.model_states(),
        "memory": engine.dashboard.memory(),
        "live_seconds": engine.metrics.live.seconds,
        "series": engine.dashboard.live_series(),
        "history_size": HISTORY_SIZE,
        "history": engine.dashboard.request_history(),
    }


def _event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@routes.get("/v1/dashboard", summary="Models, memory, live figures of the last minutes and the latest requests")
async def dashboard(request: Request) -> Response:
    """Every enabled model with its state (`unloaded`, `loading`, `loaded`), its keep-alive countdown, queue and
    memory; the server's memory (measured resident size; `budget_bytes` is null while there is no budget); one
    point a second per model over the last `live_seconds` (tokens/s, time to first token, queued, running); and
    the latest `history_size` generations, oldest first."""
    engine = engine_of(request)
    await engine.dashboard.refresh_file_facts()
    return OrjsonResponse(_snapshot(engine))


@routes.get(
    "/v1/dashboard/stream",
    summary="The dashboard as Server-Sent Events: a snapshot, then a tick every second",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event: snapshot`, then `event: tick`"}},
)
async def dashboard_stream(
    request: Request,
    events: int | None = Query(
        None, ge=1, description="Stop after this many events (for scripts); by default the stream runs until closed"
    ),
) -> Response:
    """The first event (`snapshot`) is what `GET /v1/dashboard` returns. Then, on every second, a `tick`: the
    models and memory now, the new point of each model (`points`) and the generations that ended since the last
    event (`history`)."""
    engine = engine_of(request)
    await engine.dashboard.refresh_file_facts()
    limit = events

    async def stream() -> AsyncIterator[bytes]:
        snapshot = _snapshot(engine)
        history = snapshot["history"]
        last_sequence = history[-1].sequence if history else 0
        yield _event("snapshot", snapshot)
        sent = 1
        while limit is None or sent < limit:
            await engine.dashboard.next_live_sample()
            if stopping(request):
                return  # the page reconnects to the next server
            new = engine.dashboard.request_history(after=last_sequence)
            if new:
                last_sequence = new[-1].sequence
            tick = {
                "time": time.time(),
                "models": engine.dashboard.model_states(),
                "memory": engine.dashboard.memory(),
                "points": engine.dashboard.latest_live_points(),
                "history": new,
            }
            yield _event("tick", tick)
            sent += 1

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamedResponse(stream(), media_type="text/event-stream", headers=headers)


# --- loading and unloading ----------------------------------------------------------------------------------
def _state_of(engine: Engine, model_id: str) -> Any:
    for state in engine.dashboard.model_states():
        if state.model_id == model_id:
            return state
    raise ModelNotFound(model_id, [m.id for m in engine.models()])


@routes.post(
    "/v1/models/{model_id:path}/load",
    summary="Load a model now",
    responses={
        200: {
            "description": "Loaded: the model's state (JSON), or with `stream` the load's events (SSE)",
            "content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}},
        },
        404: _error("No enabled model has this id"),
        500: _error("The model failed to load; the message says why"),
        503: _error("The model's backend library is missing, or busy models left no room in time"),
        507: _error("The model cannot fit the memory budget; the message names both sizes"),
    },
)
async def load_model(
    model_id: str,
    request: Request,
    stream: bool = Query(
        False,
        description="Server-Sent Events while it loads: `progress` events ({model, progress: 0 to 1, the share of "
        "the weights read, where the backend reports it}), then `loaded` ({model, seconds}) or `error`",
    ),
) -> Response:
    """Load the model (evicting least recently used idle models until it fits the count and the memory budget); it
    then stays loaded for its keep-alive. Answers when the model is loaded, with its state and the seconds this
    took; a model that cannot fit the memory budget is 507 before anything is loaded."""
    engine = engine_of(request)
    entry = engine.resolve(model_id)
    started = time.perf_counter()
    if not stream:
        await engine.load(entry)
        return OrjsonResponse({"model": _state_of(engine, entry.id), "seconds": time.perf_counter() - started})
    loading = asyncio.create_task(engine.load(entry))

    async def events() -> AsyncIterator[bytes]:
        last: float | None = -1.0
        try:
            while not loading.done():
                progress = engine.load_progress(entry)
                if progress != last and progress is not None:
                    yield _event("progress", {"model": entry.id, "progress": round(progress, 4)})
                    last = progress
                await asyncio.wait({loading}, timeout=PROGRESS_INTERVAL_SECONDS)
            try:
                loading.result()
            except HeylookError as exc:
                status, _, code = status_and_code(exc)
                yield _event("error", {"error": {"message": exc.message, "code": code, "status": status}})
                return
            if last != 1.0:
                yield _event("progress", {"model": entry.id, "progress": 1.0})
            yield _event("loaded", {"model": _state_of(engine, entry.id), "seconds": time.perf_counter() - started})
        finally:
            # A client that leaves does not stop the load (others may wait for the model), only the events.
            if not loading.done():
                loading.add_done_callback(_retrieve)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamedResponse(events(), media_type="text/event-stream", headers=headers)


PROGRESS_INTERVAL_SECONDS = 0.1
"""How often a streamed load reports its progress."""


def _retrieve(task: asyncio.Task[None]) -> None:
    """Read a finished background load's outcome, so that a failure is logged once and not as 'never retrieved'."""
    if not task.cancelled() and task.exception() is not None:
        log.info("a load whose client left failed: %s", task.exception())


@routes.post(
    "/v1/models/{model_id:path}/unload",
    summary="Unload a model (at once if idle, else when its requests finish)",
    responses={404: _error("No enabled model has this id")},
)
async def unload_model(model_id: str, request: Request) -> Response:
    """`was_loaded` says whether it was loaded; `model.state` is `unloaded` when it is gone already, `loaded`
    with `busy` while requests still hold it (it unloads as soon as they finish)."""
    engine = engine_of(request)
    entry = engine.resolve(model_id)
    was_loaded = await engine.expire(entry)
    return OrjsonResponse({"model": _state_of(engine, entry.id), "was_loaded": was_loaded})
