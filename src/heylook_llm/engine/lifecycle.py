"""Readiness and shutdown of the engine: whether the start-up model is loaded, and the drain at shutdown.

Readiness (`GET /ready`): ready once the start-up model is loaded, or at once when there is none; not ready while
it loads, after it failed (with the reason) and while the server shuts down.

Shutdown: new generations are refused (`ServerShuttingDown`), those in flight get `timeout` seconds to finish,
then every one still queued or running is ended with `ServerShuttingDown`, which the dialects turn into their
mid-stream error event, so that a client sees why its stream ended.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from heylook_llm.errors import ServerShuttingDown

log = logging.getLogger(__name__)


class ReadyState(enum.StrEnum):
    READY = "ready"
    LOADING = "loading"
    FAILED = "failed"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True, slots=True)
class Readiness:
    state: ReadyState
    model_id: str | None = None
    """The start-up model, if there is one."""
    reason: str | None = None
    """Why it is not ready (the load error, shutdown)."""

    @property
    def ready(self) -> bool:
        return self.state is ReadyState.READY


class Lifecycle:
    """The start-up model's load state and the shutdown drain (one per engine)."""

    def __init__(self) -> None:
        self._readiness = Readiness(ReadyState.READY)
        self._shutting_down = False

    @property
    def readiness(self) -> Readiness:
        if self._shutting_down:
            return Readiness(ReadyState.SHUTTING_DOWN, self._readiness.model_id, "the server is shutting down")
        return self._readiness

    def startup_loading(self, model_id: str) -> None:
        self._readiness = Readiness(ReadyState.LOADING, model_id, f"the start-up model '{model_id}' is loading")

    def startup_loaded(self, model_id: str) -> None:
        self._readiness = Readiness(ReadyState.READY, model_id)

    def startup_failed(self, model_id: str, reason: str) -> None:
        self._readiness = Readiness(ReadyState.FAILED, model_id, reason)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def refuse_if_shutting_down(self) -> None:
        if self._shutting_down:
            raise ServerShuttingDown("the server is shutting down and takes no new requests")

    async def drain(
        self, grace_seconds: float, in_flight: Callable[[], int], end_all: Callable[[ServerShuttingDown], int]
    ) -> None:
        """Refuse new work, wait up to `grace_seconds` for `in_flight()` to reach 0, then `end_all` that remain."""
        self._shutting_down = True
        deadline = time.monotonic() + grace_seconds
        busy = in_flight()
        if busy:
            log.info("shutting down: waiting up to %gs for %d request(s) in flight", grace_seconds, busy)
        # Polled: requests end in the router, the worker threads and the dialects; a 50 ms tick costs nothing.
        while time.monotonic() < deadline:
            if not in_flight():
                return
            await asyncio.sleep(0.05)
        if in_flight():
            ended = end_all(
                ServerShuttingDown(
                    f"the server shut down: the request was still running after the {grace_seconds:g}s shutdown timeout"
                )
            )
            log.warning("shutting down: ended %d generation(s) still running after %gs", ended, grace_seconds)
