"""keep_alive: parsing Ollama's durations, and the router unloading idle models when their time runs out."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import Any

import pytest

from heylook_llm.config.durations import format_duration, keep_alive_seconds, parse_duration_seconds
from heylook_llm.config.registry import Registry, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.generation import start_generation, with_entry_defaults
from heylook_llm.engine.router import ModelRouter
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams
from tests.support.fake_backend import FakeWorld

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2m30s", 150.0),
        ("300", 300.0),
        ("0", 0.0),
        ("-1", -1.0),
        ("-5m", -300.0),
        (" 45s ", 45.0),
    ],
)
def test_go_durations_and_bare_seconds_parse(text: str, seconds: float) -> None:
    assert parse_duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10x", "1h 30m", "ten minutes", "5m-", "--1"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_seconds(text)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300.0), (120, 120.0), (2.5, 2.5), (0, 0.0), ("0", 0.0), (-1, math.inf), ("-1m", math.inf)],
)
def test_keep_alive_negative_means_forever(value: str | float, seconds: float) -> None:
    assert keep_alive_seconds(value) == seconds


def test_keep_alive_refuses_booleans() -> None:
    with pytest.raises(ValueError):
        keep_alive_seconds(True)


@pytest.mark.parametrize(("seconds", "text"), [(300, "5m"), (5400, "1h30m"), (0.5, "0.5s"), (math.inf, "forever")])
def test_durations_format_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _registry(models: list[dict[str, Any]], max_loaded: int = 2) -> Registry:
    return parse_registry({"models": models, "max_loaded_models": max_loaded}, None)


def _model(model_id: str, path: str | None = None, **config: Any) -> dict[str, Any]:
    return {"id": model_id, "provider": "llama_cpp", "config": {"model_path": path or f"{model_id}.gguf", **config}}


def _request(model_id: str, tokens: int = 3) -> GenerationRequest:
    return GenerationRequest(model_id, SamplingParams(max_tokens=tokens), messages=[ChatMessage("user", "hi")])


async def _generate(router: ModelRouter, model_id: str, tokens: int = 3, keep_alive: float | None = None) -> str:
    active = await start_generation(router, router.entry(model_id), _request(model_id, tokens), keep_alive=keep_alive)
    try:
        return "".join([c.text async for c in active.chunks()])
    finally:
        active.close()


async def _until(condition: Any) -> None:
    """Wait for `condition()` with a generous deadline (10 s): expiry is asynchronous by design."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_idle_model_unloads_when_its_keep_alive_runs_out_without_another_request() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([_model("a"), _model("b")]), ServerSettings(), world.factory)
    await _generate(router, "a", keep_alive=0.2)
    await _generate(router, "b", keep_alive=math.inf)
    await _until(lambda: world.unloads == ["a"])
    assert [m.entry.id for m in router.loaded()] == ["b"]
    assert router.expirations == 1
    await router.close()


async def test_keep_alive_zero_unloads_right_after_the_request() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([_model("a")]), ServerSettings(), world.factory)
    await _generate(router, "a", keep_alive=0)
    await _until(lambda: router.loaded() == [])
    assert world.unloads == ["a"]
    await router.close()


async def test_server_default_applies_when_the_request_does_not_say() -> None:
    world = FakeWorld()
    settings = dataclasses.replace(ServerSettings(), keep_alive_seconds=0.1)
    router = ModelRouter(_registry([_model("a")]), settings, world.factory)
    await _generate(router, "a")
    await _until(lambda: router.loaded() == [])
    await router.close()


async def test_a_model_generating_past_its_keep_alive_is_not_unloaded() -> None:
    world = FakeWorld(token_seconds=0.01)
    router = ModelRouter(_registry([_model("a")]), ServerSettings(), world.factory)
    long_run = asyncio.create_task(_generate(router, "a", tokens=40, keep_alive=0.05))
    await _until(lambda: len(router.loaded()) == 1)
    await asyncio.sleep(0.2)  # well past keep_alive, while the request still runs
    assert world.unloads == [] and not long_run.done()
    assert (await long_run).count("t") == 40
    await _until(lambda: router.loaded() == [])
    await router.close()


async def test_expire_waits_for_running_requests_then_unloads() -> None:
    world = FakeWorld(token_seconds=0.01)
    router = ModelRouter(_registry([_model("a")]), ServerSettings(), world.factory)
    long_run = asyncio.create_task(_generate(router, "a", tokens=30, keep_alive=math.inf))
    await _until(lambda: len(router.loaded()) == 1 and router.loaded()[0].in_flight == 1)
    assert await router.expire("a") is True
    assert world.unloads == []
    assert (await long_run).count("t") == 30
    await _until(lambda: router.loaded() == [])
    assert await router.expire("a") is False  # not loaded: nothing to do, and nothing gets loaded
    assert world.loads == ["a"]
    await router.close()


async def test_expires_at_follows_the_latest_request() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([_model("a")]), ServerSettings(), world.factory)
    await router.load(router.entry("a"), keep_alive=600)
    expires = router.loaded()[0].expires_at()
    assert expires is not None and 590 < expires - time.time() <= 600
    await router.load(router.entry("a"), keep_alive=math.inf)
    assert router.loaded()[0].expires_at() is None
    with pytest.raises(InvalidRequest):
        await router.load(router.entry("a"), keep_alive=-1)
    await router.close()


async def test_aliases_share_one_loaded_copy_of_the_weights() -> None:
    world = FakeWorld()
    models = [_model("base", "w.gguf"), _model("alias", "w.gguf", temperature=0.1), _model("other", "x.gguf")]
    router = ModelRouter(_registry(models), ServerSettings(), world.factory)
    await _generate(router, "base")
    await _generate(router, "alias")
    assert world.loads == ["base"]
    assert [m.entry.id for m in router.loaded()] == ["alias"]  # the entry most recently served
    await _generate(router, "other", keep_alive=math.inf)
    assert world.loads == ["base", "other"] and world.unloads == []
    await router.close()


async def test_models_dropped_from_the_registry_unload_once_idle() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([_model("a"), _model("b")]), ServerSettings(), world.factory)
    await _generate(router, "a", keep_alive=math.inf)
    await _generate(router, "b", keep_alive=math.inf)
    router.replace_registry(_registry([_model("b")]))
    await _until(lambda: world.unloads == ["a"])
    assert [m.entry.id for m in router.loaded()] == ["b"]
    await router.close()


def test_entry_system_prompt_is_used_when_the_chat_has_none() -> None:
    entry = _registry([{**_model("a"), "system": "You are terse."}]).models[0]
    plain = with_entry_defaults(_request("a"), entry)
    assert plain.messages is not None and [m.role for m in plain.messages] == ["system", "user"]
    assert plain.messages[0].content == "You are terse."
    own = GenerationRequest("a", SamplingParams(), messages=[ChatMessage("system", "Mine"), ChatMessage("user", "x")])
    assert with_entry_defaults(own, entry).messages == own.messages
    raw = GenerationRequest("a", SamplingParams(), prompt="raw text")
    assert with_entry_defaults(raw, entry).messages is None
