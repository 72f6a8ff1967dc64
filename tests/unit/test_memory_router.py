"""The router's lifetimes with the fake backend (tests/support/fake_backend.py): pins shared by aliases, per-model
keep-alive, the swap guard, a context that grows and a model that fits. Budgets themselves are measured on real
loads in tests/integration/test_memory_budget.py."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from heylook_llm.config.registry import Registry, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.router import ModelRouter, weights_key
from tests.support.fake_backend import FakeWorld

pytestmark = pytest.mark.unit


def _registry(models: list[dict[str, Any]], max_loaded: int, **top: Any) -> Registry:
    full = [
        {"provider": "llama_cpp", **m, "config": {"model_path": f"{m['id']}.gguf", **m.get("config", {})}}
        for m in models
    ]
    return parse_registry({"models": full, "max_loaded_models": max_loaded, **top}, None)


async def _use(router: ModelRouter, model_id: str, keep_alive: float | None = None) -> None:
    await router.load(router.entry(model_id), keep_alive=keep_alive)


async def test_a_pin_holds_for_every_entry_sharing_the_weights() -> None:
    world = FakeWorld()
    registry = _registry(
        [{"id": "a", "pin": True}, {"id": "alias", "config": {"model_path": "a.gguf"}}, {"id": "b"}, {"id": "c"}], 2
    )
    router = ModelRouter(registry, ServerSettings(), world.factory)
    await _use(router, "a")
    await _use(router, "alias", keep_alive=0.0)  # served through the alias: still pinned, still for ever
    await _use(router, "b")
    await _use(router, "c")  # the pinned copy is the least recently used, yet b goes
    assert world.unloads == ["b"]
    pinned = router.loaded_model("a")
    assert pinned is not None and pinned.pinned and math.isinf(pinned.keep_alive)
    # Unpinned by a new models.yaml: it takes the server's keep-alive again.
    router.replace_registry(_registry([{"id": "a"}, {"id": "b"}, {"id": "c"}], 2))
    assert not pinned.pinned and pinned.keep_alive == ServerSettings().keep_alive_seconds
    await router.close()


async def test_a_models_keep_alive_is_its_default() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([{"id": "a", "keep_alive": "2s"}, {"id": "b"}], 2), ServerSettings(), world.factory)
    await _use(router, "a")
    await _use(router, "b")
    a, b = router.loaded_model("a"), router.loaded_model("b")
    assert a is not None and a.keep_alive == 2.0
    assert b is not None and b.keep_alive == ServerSettings().keep_alive_seconds
    await _use(router, "a", keep_alive=30.0)  # a request's keep-alive wins
    assert a.keep_alive == 30.0
    await router.close()


async def test_the_swap_guard_keeps_a_new_model_for_its_minimum_residency() -> None:
    world = FakeWorld()
    router = ModelRouter(
        _registry([{"id": "a"}, {"id": "b"}], 1, min_residency="0.5s"), ServerSettings(), world.factory
    )
    await _use(router, "a")
    started = time.monotonic()
    await _use(router, "b")  # waits for a's residency before evicting it
    assert time.monotonic() - started >= 0.4
    assert world.loads == ["a", "b"] and world.unloads == ["a"]
    await router.close()


async def test_a_larger_context_reloads_the_shared_copy_and_a_smaller_one_fits() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([{"id": "a", "config": {"n_ctx": 256}}], 1), ServerSettings(), world.factory)
    entry = router.entry("a")
    bigger = entry.model_copy(update={"config": entry.config.model_copy(update={"n_ctx": 1024})})
    assert weights_key(bigger) == weights_key(entry) and bigger.load_key() != entry.load_key()
    await router.load(entry)
    await router.load(bigger)
    assert world.loads == ["a", "a"] and world.unloads == ["a"]
    loaded = router.loaded_model("a")
    assert loaded is not None and loaded.context == 1024
    await router.load(entry)  # 256 fits in 1024: no reload
    assert world.loads == ["a", "a"] and loaded.context == 1024
    await router.close()


async def test_budget_and_estimates_are_reported() -> None:
    world = FakeWorld()
    router = ModelRouter(_registry([{"id": "a"}], 1, memory_budget="1GiB"), ServerSettings(), world.factory)
    assert router.budget_bytes == 1024**3
    await asyncio.gather(_use(router, "a"), _use(router, "a"))
    # The fake model's files do not exist: nothing is estimated, and the load measures what it grew.
    loaded = router.loaded_model("a")
    assert loaded is not None and loaded.footprint.estimate_bytes == 0 and loaded.footprint.measured_bytes is not None
    assert router.used_bytes() == loaded.footprint.total_bytes
    await router.close()
