"""The metrics recorder, the performance report and the Prometheus text, fed by a router on fake backends."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from heylook_llm.config.registry import Registry, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.generation import start_generation
from heylook_llm.engine.metrics import MetricsRecorder, percentile, sample_of
from heylook_llm.engine.performance import performance_report
from heylook_llm.engine.router import ModelRouter
from heylook_llm.errors import ModelLoadError
from heylook_llm.types import ChatMessage, GenerationRequest, GenerationStats, SamplingParams
from tests.support.fake_backend import FakeWorld

pytestmark = pytest.mark.unit


def _registry(ids: list[str], max_loaded: int = 1) -> Registry:
    models = [{"id": i, "provider": "llama_cpp", "config": {"model_path": f"{i}.gguf"}} for i in ids]
    return parse_registry({"models": models, "max_loaded_models": max_loaded}, None)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _generate(router: ModelRouter, model_id: str, tokens: int) -> None:
    request = GenerationRequest(model_id, SamplingParams(max_tokens=tokens), messages=[ChatMessage("user", "hi")])
    active = await start_generation(router, router.entry(request.model_id), request)
    try:
        async for _ in active.chunks():
            pass
    finally:
        active.close()


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile(range(1, 101), 0.95) == 95
    assert percentile([7.0], 0.95) == 7.0


def test_sample_speeds_count_evaluated_tokens_only() -> None:
    stats = GenerationStats(
        prompt_tokens=120,
        cached_prompt_tokens=20,
        completion_tokens=50,
        prompt_eval_seconds=0.5,
        generation_seconds=2.0,
        queue_seconds=0.1,
        load_seconds=1.0,
    )
    sample = sample_of(stats)
    assert sample.prompt_tokens_per_second == pytest.approx(200.0)
    assert sample.generation_tokens_per_second == pytest.approx(25.0)
    assert sample.time_to_first_token == pytest.approx(1.6)
    assert sample_of(GenerationStats()).prompt_tokens_per_second is None


def test_window_keeps_the_latest_and_totals_keep_everything() -> None:
    recorder = MetricsRecorder(window=3)
    for i in range(5):
        recorder.generation_finished("m", GenerationStats(prompt_tokens=10, completion_tokens=i, queue_seconds=i))
    report = performance_report(recorder)
    model = report["models"]["m"]
    assert model["requests"] == 5 and model["window_requests"] == 3
    assert model["tokens"] == {"prompt": 50, "cached_prompt": 0, "completion": 10}
    assert model["queue_wait_seconds"]["p50"] == 3 and model["queue_wait_seconds"]["total"] == 10
    assert report["overall"]["requests"] == 5
    assert "5 generations on 1 model" in report["summary"]


async def test_router_feeds_loads_evictions_errors_and_generations() -> None:
    world = FakeWorld(load_seconds=0.01, fail_loading={"bad"})
    recorder = MetricsRecorder()
    router = ModelRouter(_registry(["a", "b", "bad"]), ServerSettings(), world.factory, metrics=recorder)
    await _generate(router, "a", 3)
    await _generate(router, "a", 2)
    await _generate(router, "b", 4)  # evicts a
    with pytest.raises(ModelLoadError):
        await _generate(router, "bad", 1)
    report = performance_report(recorder)
    a, b, bad = (report["models"][k] for k in ("a", "b", "bad"))
    assert (a["requests"], a["loads"], a["evictions"]) == (2, 1, 1)
    assert a["tokens"]["completion"] == 5 and a["tokens"]["prompt"] == 2
    # Loading "bad" made room first: b was evicted before the load failed.
    assert (b["requests"], b["loads"], b["evictions"]) == (1, 1, 1)
    assert (bad["errors"], bad["load_failures"], bad["errors_by_type"]) == (1, 1, {"ModelLoadError": 1})
    assert a["load_seconds"]["last"] is not None and a["load_seconds"]["last"] >= 0.01
    assert report["overall"]["requests"] == 3 and report["overall"]["errors"] == 1

    samples = _samples(recorder.prometheus_text().decode())
    assert samples[("heylook_generations_total", (("model", "a"),))] == 2
    assert samples[("heylook_completion_tokens_total", (("model", "a"),))] == 5
    assert samples[("heylook_model_evictions_total", (("model", "a"),))] == 1
    assert samples[("heylook_model_loads_total", (("model", "b"),))] == 1
    assert samples[("heylook_generation_errors_total", (("error", "ModelLoadError"), ("model", "bad")))] == 1
    assert samples[("heylook_time_to_first_token_seconds_count", (("model", "a"),))] == 2
    assert samples[("heylook_models_loaded", ())] == 0
    assert samples[("heylook_queue_depth", (("model", "b"),))] == 0
    await router.close()


async def test_a_generation_closed_before_its_end_counts_as_cancelled() -> None:
    recorder = MetricsRecorder()
    router = ModelRouter(_registry(["a"]), ServerSettings(), FakeWorld(load_seconds=0.0).factory, metrics=recorder)
    request = GenerationRequest("a", SamplingParams(max_tokens=50), messages=[ChatMessage("user", "hi")])
    active = await start_generation(router, router.entry(request.model_id), request)
    active.close()
    model = performance_report(recorder)["models"]["a"]
    assert (model["requests"], model["cancelled"], model["errors"]) == (0, 1, 0)
    await router.close()


def test_each_recorder_has_its_own_prometheus_registry() -> None:
    first, second = MetricsRecorder(), MetricsRecorder()
    first.generation_finished("m", GenerationStats(completion_tokens=3))
    assert b'heylook_completion_tokens_total{model="m"} 3.0' in first.prometheus_text()
    assert b'model="m"' not in second.prometheus_text()
