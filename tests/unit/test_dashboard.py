"""The dashboard's data (request history, live series, model states), its endpoints and the page's files, in-process
over fake backends. The page itself is driven in a real browser by tests/integration/test_ui_browser.py."""

from __future__ import annotations

import re

import orjson
import pytest

from heylook_llm.api.ui.routes import ASSETS, CONTENT_SECURITY_POLICY, STATIC
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.activity import HISTORY_SIZE, LiveSeries, RequestHistory
from heylook_llm.engine.generation import start_generation
from heylook_llm.engine.router import ModelRouter
from heylook_llm.errors import ModelLoadError
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams
from tests.support.fake_backend import FakeWorld
from tests.support.inprocess import fake_client

pytestmark = pytest.mark.unit

HELLO = [{"role": "user", "content": "hi"}]


def _add(history: RequestHistory, model_id: str = "m") -> None:
    history.add(
        model_id=model_id,
        origin="openai",
        request_id="r",
        status="stop",
        prompt_tokens=1,
        completion_tokens=2,
        cached_tokens=0,
        ttft_seconds=0.1,
        duration_seconds=0.2,
    )


def test_history_keeps_the_latest_hundred_in_order() -> None:
    history = RequestHistory()
    for _ in range(HISTORY_SIZE + 50):
        _add(history)
    records = history.records()
    assert len(records) == HISTORY_SIZE == 100
    assert [r.sequence for r in records] == list(range(51, 151))
    assert [r.sequence for r in history.after(147)] == [148, 149, 150]
    assert history.count == 150


def test_live_series_is_one_point_a_second_for_five_minutes() -> None:
    live = LiveSeries()
    live.add_tokens("m", 30)
    live.add_first_token("m", 0.2)
    live.add_first_token("m", 0.4)
    first = live.sample([("m", 2, 3)], now=1000.0)["m"]
    assert first.tokens_per_second > 0 and first.ttft_seconds == pytest.approx(0.3)
    assert (first.queued, first.running) == (2, 3)
    # A second without events: no tokens, no first token, the counts as sampled.
    quiet = live.sample([("m", 0, 1)], now=1001.0)["m"]
    assert quiet.tokens_per_second == 0 and quiet.ttft_seconds is None and quiet.running == 1
    for second in range(1002, 1500):
        live.sample([("m", 0, 0)], now=float(second))
    assert len(live.series()["m"]) == live.seconds == 300
    # A model that is neither loaded nor busy gets no points, and is forgotten once its points are old.
    for second in range(1500, 1801):
        live.sample([], now=float(second))
    assert "m" not in live.series()


async def test_cancelled_and_failed_generations_are_recorded() -> None:
    registry = parse_registry(
        {"models": [{"id": i, "provider": "llama_cpp", "config": {"model_path": f"{i}.gguf"}} for i in ("m", "bad")]},
        None,
    )
    world = FakeWorld(load_seconds=0.0, fail_loading={"bad"})
    router = ModelRouter(registry, ServerSettings(), world.factory)
    try:
        request = GenerationRequest("m", SamplingParams(max_tokens=50), messages=[ChatMessage("user", "hi")])
        request.origin = "ollama"
        active = await start_generation(router, router.entry("m"), request)
        active.close()  # the client went away after the first chunk
        with pytest.raises(ModelLoadError):
            await start_generation(router, router.entry("bad"), GenerationRequest("bad", SamplingParams()))
    finally:
        await router.close()
    cancelled, failed = router.metrics.history.records()
    assert (cancelled.model_id, cancelled.origin, cancelled.status) == ("m", "ollama", "cancelled")
    assert cancelled.ttft_seconds is not None and cancelled.prompt_tokens is None
    assert (failed.model_id, failed.status, failed.error) == ("bad", "error", "ModelLoadError")
    assert failed.ttft_seconds is None


def test_snapshot_shows_models_history_with_each_dialect_and_memory() -> None:
    with fake_client(ids=("a", "b")) as client:
        chat = client.post("/v1/chat/completions", json={"model": "a", "messages": HELLO, "max_tokens": 3})
        ollama = client.post(
            "/api/chat", json={"model": "a", "messages": HELLO, "stream": False, "options": {"num_predict": 2}}
        )
        assert chat.status_code == 200 and ollama.status_code == 200
        snapshot = client.get("/v1/dashboard").json()
    models = {m["model_id"]: m for m in snapshot["models"]}
    assert models["a"]["state"] == "loaded" and models["b"]["state"] == "unloaded"
    assert models["a"]["unloads_in_seconds"] > 0 and not models["a"]["busy"]
    assert models["a"]["expected_load_seconds"] is not None
    history = snapshot["history"]
    assert [(r["model_id"], r["origin"], r["status"]) for r in history] == [
        ("a", "openai", "length"),
        ("a", "ollama", "length"),
    ]
    assert [r["completion_tokens"] for r in history] == [3, 2]
    assert all(r["prompt_tokens"] == 1 and r["ttft_seconds"] is not None for r in history)
    assert snapshot["history_size"] == 100 and snapshot["live_seconds"] == 300
    assert snapshot["memory"]["budget_bytes"] > 0  # a share of the machine's memory when models.yaml sets none
    assert snapshot["memory"]["loaded_bytes"] >= 0  # the fake backend's measured resident growth


def test_stream_starts_with_a_snapshot_then_ticks_every_second() -> None:
    with fake_client() as client:
        client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "max_tokens": 2})
        response = client.get("/v1/dashboard/stream", params={"events": 2})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert len(events) == 2
    names = [re.match(r"event: (\w+)\ndata: ", block) for block in events]
    assert [m.group(1) for m in names if m] == ["snapshot", "tick"]
    snapshot = orjson.loads(events[0].split("data: ", 1)[1])
    assert snapshot["object"] == "dashboard" and snapshot["models"][0]["model_id"] == "m"
    assert len(snapshot["history"]) == 1
    tick = orjson.loads(events[1].split("data: ", 1)[1])
    assert set(tick) == {"time", "models", "memory", "points", "history"}
    assert tick["points"]["m"]["running"] == 0 and tick["history"] == []  # nothing new since the snapshot


def test_load_and_unload_endpoints() -> None:
    world = FakeWorld(load_seconds=0.0, fail_loading={"bad"})
    with fake_client(world, ids=("m", "bad")) as client:
        loaded = client.post("/v1/models/m/load")
        assert loaded.status_code == 200
        assert loaded.json()["model"]["state"] == "loaded" and world.loads == ["m"]
        unloaded = client.post("/v1/models/m/unload")
        assert unloaded.status_code == 200
        assert unloaded.json()["was_loaded"] is True and unloaded.json()["model"]["state"] == "unloaded"
        again = client.post("/v1/models/m/unload").json()
        assert again["was_loaded"] is False
        unknown = client.post("/v1/models/nope/load")
        failed = client.post("/v1/models/bad/load")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "model_load_failed"
    assert world.unloads == ["m"]


def test_page_is_served_with_a_strict_policy_and_no_secret() -> None:
    with fake_client() as client:
        page = client.get("/ui")
        script = client.get("/ui/app.js")
        missing = client.get("/ui/nope.js")
        escaping = client.get("/ui/..%2Froutes.py")
        slash = client.get("/ui/", follow_redirects=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert '<script type="module" src="/ui/app.js">' in page.text
    assert "Bearer" not in page.text and "api_key" not in page.text.lower()
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404 and escaping.status_code == 404
    assert slash.status_code in (307, 308) and slash.headers["location"] == "/ui"


def test_every_file_the_page_loads_is_served() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    wanted = set(re.findall(r'(?:src|href)="/ui/([\w.-]+)"', html))
    for script in STATIC.glob("*.js"):
        wanted |= set(re.findall(r'from "\./([\w.-]+)"', script.read_text(encoding="utf-8")))
    assert wanted <= set(ASSETS), wanted - set(ASSETS)
    assert {"app.js", "app.css", "chat.js", "dashboard.js", "markdown.js"} <= wanted


def test_openapi_documents_the_endpoints_and_links_the_page() -> None:
    with fake_client() as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/ui", "/v1/dashboard", "/v1/dashboard/stream"} <= set(paths)
    load = paths["/v1/models/{model_id}/load"]["post"]["responses"]
    assert {"200", "404", "500", "503"} <= set(load)
    assert "404" in paths["/v1/models/{model_id}/unload"]["post"]["responses"]
    assert "(/ui)" in schema["info"]["description"]
