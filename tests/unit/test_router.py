from __future__ import annotations

import asyncio
import dataclasses

import pytest

from heylook_llm.config.registry import Registry, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.generation import start_generation
from heylook_llm.engine.router import ModelRouter
from heylook_llm.errors import ModelLoadError, ModelNotFound, ServerBusy
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams
from tests.support.fake_backend import FakeWorld

pytestmark = pytest.mark.unit


def _registry(ids: list[str], max_loaded: int) -> Registry:
    models = [{"id": i, "provider": "llama_cpp", "config": {"model_path": f"{i}.gguf"}} for i in ids]
    return parse_registry({"models": models, "max_loaded_models": max_loaded}, None)


def _request(model_id: str, tokens: int = 3) -> GenerationRequest:
    return GenerationRequest(
        model_id=model_id,
        sampling=SamplingParams(max_tokens=tokens),
        messages=[ChatMessage("user", "hi")],
    )


async def _generate(router: ModelRouter, model_id: str, tokens: int = 3) -> str:
    active = await start_generation(router, router.entry(model_id), _request(model_id, tokens))
    try:
        return "".join([c.text async for c in active.chunks()])
    finally:
        active.close()


async def test_lru_model_is_unloaded_first() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry(["a", "b", "c"], 2), ServerSettings(), world.factory)
    await _generate(router, "a")
    await _generate(router, "b")
    await _generate(router, "a")  # a is now the most recently used
    await _generate(router, "c")
    assert world.unloads == ["b"]
    assert [m.entry.id for m in router.loaded()] == ["a", "c"]
    assert router.evictions == 1
    await router.close()
    assert world.loaded == set()


async def test_concurrent_requests_for_one_model_load_it_once() -> None:
    world = FakeWorld(load_seconds=0.2)
    router = ModelRouter(_registry(["a"], 1), ServerSettings(), world.factory)
    results = await asyncio.gather(*(_generate(router, "a") for _ in range(8)))
    assert results == ["t0 t1 t2 "] * 8
    assert world.loads == ["a"]
    await router.close()


async def test_busy_model_is_not_unloaded_under_a_request() -> None:
    world = FakeWorld(token_seconds=0.02)
    router = ModelRouter(_registry(["a", "b"], 1), ServerSettings(), world.factory)
    long_a = asyncio.create_task(_generate(router, "a", tokens=20))
    await asyncio.sleep(0.1)  # a is loaded and generating
    assert world.loaded == {"a"}
    text_b = await _generate(router, "b")
    # b could only load after a finished: a's output is whole and a was unloaded only then.
    assert long_a.done()
    assert (await long_a).count("t") == 20
    assert text_b == "t0 t1 t2 "
    assert world.loads == ["a", "b"] and world.unloads == ["a"]
    await router.close()


async def test_unknown_model_is_not_found_and_never_another_model() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry(["a"], 1), ServerSettings(), world.factory)
    with pytest.raises(ModelNotFound) as err:
        await _generate(router, "nope")
    assert "nope" in err.value.message and "a" in err.value.message
    assert world.loads == []


async def test_load_failure_is_reported_and_leaves_nothing_loaded() -> None:
    world = FakeWorld(fail_loading={"a"})
    router = ModelRouter(_registry(["a", "b"], 1), ServerSettings(), world.factory)
    with pytest.raises(ModelLoadError, match="told to fail"):
        await _generate(router, "a")
    assert router.loaded() == []
    assert await _generate(router, "b") == "t0 t1 t2 "
    await router.close()


async def test_cancelled_generation_frees_the_model() -> None:
    world = FakeWorld(token_seconds=0.01)
    router = ModelRouter(_registry(["a"], 1), ServerSettings(), world.factory)
    active = await start_generation(router, router.entry("a"), _request("a", tokens=10_000))
    seen = 0
    async for _chunk in active.chunks():
        seen += 1
        if seen == 3:
            break
    active.close()
    assert router.loaded()[0].in_flight == 0
    assert await asyncio.wait_for(_generate(router, "a"), timeout=2) == "t0 t1 t2 "
    await router.close()


async def test_queue_limit_answers_busy() -> None:
    world = FakeWorld(token_seconds=0.01)
    settings = dataclasses.replace(ServerSettings(), max_queued_requests_per_model=2)
    router = ModelRouter(_registry(["a"], 1), settings, world.factory)
    first = await start_generation(router, router.entry("a"), _request("a", tokens=1000))
    second = asyncio.create_task(_generate(router, "a"))
    await asyncio.sleep(0.05)
    with pytest.raises(ServerBusy) as err:
        await start_generation(router, router.entry("a"), _request("a"))
    assert err.value.retry_after_seconds >= 1
    first.close()
    assert await second == "t0 t1 t2 "
    await router.close()
