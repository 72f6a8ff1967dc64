"""Admission of several generations at once and dropping of cancelled queued requests, on fake backends: nothing
runs for a request that was refused, that failed in part, or whose client went away while it was queued."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Generator
from typing import Any

import pytest

from heylook_llm.backends.base import Backend
from heylook_llm.config.registry import ModelEntry, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.admission import start_generations
from heylook_llm.engine.generation import ActiveGeneration, start_generation
from heylook_llm.engine.router import ModelRouter
from heylook_llm.errors import InvalidRequest, LimitExceeded, ServerBusy, ServerShuttingDown
from heylook_llm.types import GenerationChunk, GenerationRequest, SamplingParams
from tests.support.fake_backend import FakeBackend, FakeWorld

pytestmark = pytest.mark.unit


class CountingWorld(FakeWorld):
    """Counts the prompts a backend opened (evaluated) and the tokens it generated."""

    def __init__(self, parallel: int = 1, token_seconds: float = 0.002) -> None:
        super().__init__(load_seconds=0.0, token_seconds=token_seconds)
        self.parallel = parallel
        self.opened: list[str] = []
        self.tokens = 0
        self.count_lock = threading.Lock()

    def factory(self, entry: ModelEntry, settings: ServerSettings) -> Backend:
        return CountingBackend(entry, settings, self)


class CountingBackend(FakeBackend):
    world: CountingWorld

    def load(self) -> None:
        super().load()
        self.max_parallel = self.world.parallel

    def open_sequence(self, request: GenerationRequest) -> Any:
        prompt = request.prompt or ""
        with self.world.count_lock:
            self.world.opened.append(prompt)
        if prompt == "boom":
            raise InvalidRequest("the prompt is empty", param="prompt")
        return self._counted(self.generate_tokens(request))

    def _counted(self, tokens: Generator[GenerationChunk, None, None]) -> Generator[GenerationChunk, None, None]:
        for chunk in tokens:
            with self.world.count_lock:
                self.world.tokens += 1
            yield chunk


def _router(world: FakeWorld, queue_limit: int = 64) -> ModelRouter:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None
    )
    settings = dataclasses.replace(ServerSettings(), max_queued_requests_per_model=queue_limit)
    return ModelRouter(registry, settings, world.factory)


def _request(prompt: str, tokens: int) -> GenerationRequest:
    return GenerationRequest(model_id="m", sampling=SamplingParams(max_tokens=tokens), prompt=prompt)


async def _drain(active: ActiveGeneration) -> str:
    try:
        return "".join([chunk.text async for chunk in active.chunks()])
    finally:
        active.close()


async def test_more_parts_than_the_queue_holds_is_refused_by_name_before_anything_runs() -> None:
    world = CountingWorld()
    router = _router(world, queue_limit=4)
    with pytest.raises(LimitExceeded) as err:
        await start_generations(router, router.entry("m"), [_request(f"p{i}", 3) for i in range(5)], param="prompt")
    assert "max_queued_requests_per_model is 4" in err.value.message and err.value.param == "prompt"
    assert world.loads == [] and world.opened == []
    await router.close()


async def test_parts_that_do_not_fit_now_are_refused_whole() -> None:
    world = CountingWorld(parallel=1)
    router = _router(world, queue_limit=4)
    entry = router.entry("m")
    blocker = await start_generation(router, entry, _request("blocker", 10_000))
    with pytest.raises(ServerBusy):
        await start_generations(router, entry, [_request(f"p{i}", 3) for i in range(4)])
    blocker.close()
    await asyncio.sleep(0.05)
    assert world.opened == ["blocker"]
    assert router.loaded()[0].worker.pending == 0
    await router.close()


async def test_a_failing_part_cancels_every_other_part() -> None:
    world = CountingWorld(parallel=4, token_seconds=0.005)
    router = _router(world)
    requests = [_request("a", 2000), _request("boom", 2000), *(_request(f"q{i}", 2000) for i in range(4))]
    with pytest.raises(InvalidRequest):
        await start_generations(router, router.entry("m"), requests)
    await asyncio.sleep(0.1)
    tokens_after_error = world.tokens
    await asyncio.sleep(0.2)
    # The parts admitted with it stopped within a token or two; the queued ones never opened.
    assert world.tokens == tokens_after_error
    assert world.tokens < 50
    assert "q3" not in world.opened  # the four slots were full when the failure came
    assert router.loaded()[0].worker.pending == 0 and router.loaded()[0].in_flight == 0
    await router.close()


async def test_each_mode_keeps_the_parts_that_started() -> None:
    world = CountingWorld(parallel=4)
    router = _router(world)
    parts = await start_generations(
        router, router.entry("m"), [_request("a", 3), _request("boom", 3), _request("c", 3)], all_or_nothing=False
    )
    assert isinstance(parts[1], InvalidRequest)
    texts = [await _drain(p) for p in parts if isinstance(p, ActiveGeneration)]
    assert texts == ["t0 t1 t2 ", "t0 t1 t2 "]
    await router.close()


async def test_a_request_cancelled_while_queued_is_dropped_before_its_prompt_is_read() -> None:
    world = CountingWorld(parallel=1)
    router = _router(world, queue_limit=2)
    entry = router.entry("m")
    blocker = await start_generation(router, entry, _request("blocker", 10_000))
    waiting = asyncio.create_task(start_generation(router, entry, _request("queued", 3)))
    await asyncio.sleep(0.05)
    worker = router.loaded()[0].worker
    assert worker.pending == 2
    waiting.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # It stops counting against the queue limit at once, while the blocker still runs.
    assert worker.pending == 1
    follow_up = asyncio.create_task(start_generation(router, entry, _request("next", 3)))
    await asyncio.sleep(0.05)
    blocker.close()
    assert await _drain(await follow_up) == "t0 t1 t2 "
    assert world.opened == ["blocker", "next"]
    await router.close()


async def test_shutdown_ends_queued_and_running_generations_with_an_error() -> None:
    world = CountingWorld(parallel=1)
    router = _router(world)
    entry = router.entry("m")
    running = await start_generation(router, entry, _request("running", 100_000))
    queued = asyncio.create_task(start_generation(router, entry, _request("queued", 3)))
    await asyncio.sleep(0.05)
    assert router.fail_in_flight(ServerShuttingDown("stopping")) == 2
    with pytest.raises(ServerShuttingDown):
        await _drain(running)
    with pytest.raises(ServerShuttingDown):
        await queued
    assert world.opened == ["running"]
    await router.close()
