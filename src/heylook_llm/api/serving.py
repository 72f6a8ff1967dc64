"""Running the app under uvicorn, telling it when a stop was asked for.

uvicorn waits for open responses before it stops (up to its graceful timeout, then it cancels them and logs a
traceback). Streams that never end on their own, such as the dashboard's events, read `stopping(request)` (set
here on SIGINT or SIGTERM) and end at their next event, so the server stops at once with a page open.

Generations drain: once uvicorn has stopped accepting connections, new generations are refused, those in flight
get `shutdown_timeout_seconds` (--shutdown-timeout) to finish, and every one still queued or running is then
ended with `ServerShuttingDown`, so that each stream closes with its dialect's error event and terminator instead
of being cut. uvicorn's own graceful timeout is a little longer, a backstop for work that is not a generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.service import Engine
from heylook_llm.engine.tasks import cancel_and_wait

BACKSTOP_SECONDS = 3
"""Time the streams get, after the drain ended them, to send their last frames before uvicorn cancels them."""


def serve(app: FastAPI, settings: ServerSettings, log_level: str) -> bool:
    """Serve `app` until told to stop; False when the server could not start (the port is taken, ...)."""

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.stopping = True
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            engine: Engine | None = getattr(app.state, "engine", None)
            drain = None
            if engine is not None:
                drain = asyncio.create_task(engine.drain(settings.shutdown_timeout_seconds), name="drain")
            try:
                await super().shutdown(sockets)
            finally:
                await cancel_and_wait(drain)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds) + BACKSTOP_SECONDS,
    )
    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return server.started
