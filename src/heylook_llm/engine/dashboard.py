"""What the dashboard shows of each model and of the server's memory: built by `DashboardView`
(engine/dashboard_view.py) from the router's state, the backends' facts and the model files, never stored separately."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from heylook_llm.model_info import ModelFileInfo

log = logging.getLogger(__name__)

MODEL_STATES = ("unloaded", "loading", "loaded", "remote")
"""`ModelState.state` values; "remote" is for models served by a remote engine (none exist yet)."""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a model's files say, for a model that is not loaded (read once per file version)."""

    size_bytes: int
    parameter_size: str
    quantization: str
    context_length: int


def file_facts(info: ModelFileInfo) -> FileFacts:
    return FileFacts(info.size_bytes, info.parameter_size, info.quantization_level, info.context_length)


@dataclass(frozen=True, slots=True)
class ModelState:
    """One enabled model as the dashboard shows it."""

    model_id: str
    provider: str
    backend: str
    description: str
    capabilities: list[str]
    state: str
    """One of MODEL_STATES."""
    busy: bool = False
    """Requests hold the model (it cannot be unloaded until they finish)."""
    queued: int = 0
    running: int = 0
    max_parallel: int = 0
    loaded_at: float | None = None
    """Wall-clock time the weights finished loading."""
    expires_at: float | None = None
    """Wall-clock time its keep-alive runs out if no request comes; None while unloaded or kept for ever."""
    unloads_in_seconds: float | None = None
    kept_loaded: bool = False
    """Its keep-alive never runs out (only the LRU or an unload request removes it)."""
    loading_since: float | None = None
    expected_load_seconds: float | None = None
    """How long its previous load took: the page shows loading progress against it."""
    size_bytes: int | None = None
    """What the memory budget counts for the loaded model (measured at load; else the weights' size)."""
    accelerator_bytes: int | None = None
    """Of those, bytes in GPU (or Apple unified) memory."""
    context_length: int | None = None
    """The context window: as loaded, else as trained (from the files)."""
    files: FileFacts | None = None


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    loaded_bytes: int
    """Weights of the loaded models (each loaded copy counted once)."""
    accelerator_bytes: int
    process_resident_bytes: int | None
    """Measured: this server process's resident memory (None where the platform does not say)."""
    budget_bytes: int | None
    """The memory budget models must fit in; None until one exists."""


def process_resident_bytes() -> int | None:
    """The resident set of this process now, from /proc on Linux; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


async def sample_every_second(sample: Callable[[], None]) -> None:
    """Call `sample` on every whole second of the wall clock (so that points of every model line up), for ever."""
    target = math.floor(time.time()) + 1
    while True:
        await asyncio.sleep(max(0.0, target - time.time()))
        try:
            sample()
        except Exception:
            log.exception("sampling the live figures failed")
        # The loop's clock may wake a little early: the next second is counted from the target, never from now,
        # so one second never gets two samples (and a stalled loop skips the seconds it missed).
        target = max(target + 1, math.floor(time.time()) + 1)
