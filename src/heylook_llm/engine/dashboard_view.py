"""The dashboard's figures of a running engine (`Engine.dashboard`): every model's state, memory, the per-second
live series and the request history. Built on demand from the router, the metrics and the model files; only the
file facts (read when the page asks) and the live series (sampled once a second) are kept."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import TYPE_CHECKING

from heylook_llm.engine.activity import LivePoint, RequestRecord
from heylook_llm.engine.dashboard import (
    FileFacts,
    MemoryFigures,
    ModelState,
    file_facts,
    process_resident_bytes,
    sample_every_second,
)
from heylook_llm.engine.features import capability_names
from heylook_llm.engine.tasks import cancel_and_wait
from heylook_llm.errors import ModelLoadError

if TYPE_CHECKING:
    from heylook_llm.engine.router import ModelRouter
    from heylook_llm.engine.service import Engine


class DashboardView:
    def __init__(self, engine: Engine, router: ModelRouter) -> None:
        self._engine = engine
        self._router = router
        self._file_facts: dict[str, FileFacts | None] = {}
        self._live_sampler: asyncio.Task[None] | None = None

    def model_states(self) -> list[ModelState]:
        """Every enabled model with what it is doing now (file facts from the last `refresh_file_facts`)."""
        loading = self._router.loading()
        figures = self._engine.metrics.models()
        states = []
        for entry in self._engine.models():
            model = self._router.loaded_model(entry.id)
            load_times = figures[entry.id].load_times if entry.id in figures else None
            files = self._file_facts.get(entry.id)
            unloaded = ModelState(
                model_id=entry.id,
                provider=entry.provider,
                backend=self._engine.backend_name(entry),
                description=entry.description,
                capabilities=capability_names(self._engine.features(entry)),
                state="loading" if entry.id in loading else "unloaded",
                loading_since=loading.get(entry.id),
                expected_load_seconds=load_times[-1] if load_times else None,
                context_length=files.context_length if files is not None else None,
                files=files,
            )
            remote = self._engine.upstream_status(entry)
            if remote is not None:
                states.append(
                    dataclasses.replace(unloaded, state="remote", busy=remote.in_flight > 0, running=remote.in_flight)
                )
                continue
            if model is None:
                states.append(unloaded)
                continue
            worker, facts = model.worker, model.worker.backend.facts
            expires_at = model.expires_at()
            states.append(
                dataclasses.replace(
                    unloaded,
                    state="loaded",
                    loading_since=None,
                    busy=model.in_flight > 0,
                    queued=max(0, worker.pending - worker.running),
                    running=worker.running,
                    max_parallel=worker.backend.max_parallel,
                    loaded_at=time.time() - (time.perf_counter() - model.loaded_at),
                    expires_at=expires_at,
                    unloads_in_seconds=None if expires_at is None else max(0.0, expires_at - time.time()),
                    kept_loaded=math.isinf(model.keep_alive),
                    # What the memory budget counts: measured at load (weights, KV cache, buffers).
                    size_bytes=model.footprint.total_bytes or facts.size_bytes,
                    accelerator_bytes=model.footprint.accelerator_bytes or facts.accelerator_bytes,
                    context_length=facts.context_length or None,
                )
            )
        return states

    def memory(self) -> MemoryFigures:
        loaded = self._router.loaded()
        return MemoryFigures(
            loaded_bytes=self._router.used_bytes(),
            accelerator_bytes=sum(m.footprint.accelerator_bytes for m in loaded),
            process_resident_bytes=process_resident_bytes(),
            budget_bytes=self.memory_budget_bytes(),
        )

    def memory_budget_bytes(self) -> int | None:
        """The memory the loaded models may use together (models.yaml's memory_budget, else a safe share of what
        was available at start-up); the dashboard draws its budget bar from it."""
        return self._router.budget_bytes

    async def refresh_file_facts(self) -> None:
        """Read (or re-read, when they changed) the files of every enabled model, off the event loop."""
        for entry in self._engine.models():
            if entry.upstream is not None:
                continue
            try:
                self._file_facts[entry.id] = file_facts(await self._engine.file_info(entry))
            except ModelLoadError:
                self._file_facts[entry.id] = None

    def live_series(self) -> dict[str, list[LivePoint]]:
        """Per-second figures of each model over the last minutes."""
        self.ensure_sampling()
        return self._engine.metrics.live.series()

    def latest_live_points(self) -> dict[str, LivePoint]:
        """The point each model got at the last per-second sample."""
        return self._engine.metrics.live.latest()

    async def next_live_sample(self) -> None:
        """Wait for the next per-second sample (a new point for each loaded or active model)."""
        self.ensure_sampling()
        await self._engine.metrics.live.next_sample()

    def request_history(self, after: int = 0) -> list[RequestRecord]:
        """The latest generations (at most 100), oldest first; with `after`, only those recorded after it."""
        return self._engine.metrics.history.after(after)

    def ensure_sampling(self) -> None:
        """Start the per-second sampler on the running loop, if it is not running."""
        if self._live_sampler is None or self._live_sampler.done():
            self._live_sampler = asyncio.get_running_loop().create_task(
                sample_every_second(self._sample_live), name="dashboard-live-figures"
            )

    def _sample_live(self) -> None:
        states = [
            (m.entry.id, max(0, m.worker.pending - m.worker.running), m.worker.running) for m in self._router.loaded()
        ]
        self._engine.metrics.live.sample(states)

    async def close(self) -> None:
        await cancel_and_wait(self._live_sampler)
        self._live_sampler = None
