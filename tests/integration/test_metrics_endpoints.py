"""/v1/performance and /metrics move after requests and agree with each other and with the responses' usage."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def _prometheus(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.base_url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _performance(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/v1/performance", timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _model_figures(server: ServerProcess, model: str) -> dict[str, Any]:
    figures: dict[str, Any] = _performance(server)["models"].get(model) or {
        "requests": 0,
        "errors": 0,
        "tokens": {"prompt": 0, "cached_prompt": 0, "completion": 0},
    }
    return figures


def test_figures_move_with_requests_and_match_usage(server: ServerProcess, client: OpenAI, chat_model: str) -> None:
    before = _model_figures(server, chat_model)
    usages = []
    for max_tokens in (3, 5):
        result = client.chat.completions.create(
            model=chat_model, messages=[{"role": "user", "content": "count"}], max_tokens=max_tokens, temperature=0
        )
        usages.append(result.usage)
    after = _model_figures(server, chat_model)
    assert after["requests"] - before["requests"] == 2
    assert after["tokens"]["completion"] - before["tokens"]["completion"] == sum(u.completion_tokens for u in usages)
    assert after["tokens"]["prompt"] - before["tokens"]["prompt"] == sum(u.prompt_tokens for u in usages)
    cached = sum((u.prompt_tokens_details.cached_tokens or 0) for u in usages if u.prompt_tokens_details)
    assert after["tokens"]["cached_prompt"] - before["tokens"]["cached_prompt"] == cached
    assert after["time_to_first_token_seconds"]["p50"] > 0
    assert after["generation_tokens_per_second"]["since_start"] > 0

    # /metrics holds the same totals as /v1/performance.
    samples = _prometheus(server)
    label = (("model", chat_model),)
    assert samples[("heylook_generations_total", label)] == after["requests"]
    assert samples[("heylook_completion_tokens_total", label)] == after["tokens"]["completion"]
    assert samples[("heylook_prompt_tokens_total", label)] == after["tokens"]["prompt"]
    assert samples[("heylook_prompt_tokens_cached_total", label)] == after["tokens"]["cached_prompt"]
    assert samples[("heylook_time_to_first_token_seconds_count", label)] == after["requests"]
    assert samples[("heylook_model_loads_total", label)] == after["loads"] >= 1
    assert samples[("heylook_models_loaded", ())] >= 1
    assert samples[("heylook_queue_depth", label)] == 0


def test_errors_are_counted(server: ServerProcess, client: OpenAI) -> None:
    import openai

    before = _model_figures(server, "demo-gguf")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            # Past the 2,048-token window but under the 32 KB refused before tokenizing (PromptTooLong, its own type).
            model="demo-gguf",
            messages=[{"role": "user", "content": "too long " * 2500}],
            max_tokens=2,
        )
    after = _model_figures(server, "demo-gguf")
    assert after["errors"] - before["errors"] == 1
    assert after["errors_by_type"].get("ContextLengthExceeded", 0) >= 1
    samples = _prometheus(server)
    key = ("heylook_generation_errors_total", (("error", "ContextLengthExceeded"), ("model", "demo-gguf")))
    assert samples[key] == after["errors_by_type"]["ContextLengthExceeded"]


def test_ollama_requests_are_measured_the_same_way(server: ServerProcess) -> None:
    before = _model_figures(server, "demo-gguf")
    reply = httpx.post(
        f"{server.base_url}/api/generate",
        json={"model": "demo-gguf", "prompt": "hello", "stream": False, "options": {"num_predict": 4}},
        timeout=60,
    ).json()
    after = _model_figures(server, "demo-gguf")
    assert after["tokens"]["completion"] - before["tokens"]["completion"] == reply["eval_count"]
    # prompt_eval_count is the whole prompt, as Ollama reports it; the metrics count cached tokens apart.
    assert after["tokens"]["prompt"] - before["tokens"]["prompt"] == reply["prompt_eval_count"]


def test_summary_is_written_from_the_numbers(server: ServerProcess, client: OpenAI) -> None:
    client.chat.completions.create(model="demo-gguf", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    report = _performance(server)
    summary = report["summary"]
    assert f"finished {report['overall']['requests']} generation" in summary
    assert "first token came after" in summary
    assert report["window_size"] > 0 and report["uptime_seconds"] > 0
