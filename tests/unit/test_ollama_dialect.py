"""The Ollama dialect against the engine façade, in-process with a fake backend."""

from __future__ import annotations

import orjson
import pytest

from heylook_llm.config.settings import ApiMode
from tests.support.fake_backend import FakeWorld
from tests.support.inprocess import fake_client

pytestmark = pytest.mark.unit

HELLO = [{"role": "user", "content": "hi"}]


def test_chat_streams_ndjson_and_ends_with_measurements() -> None:
    with fake_client() as client:
        response = client.post("/api/chat", json={"model": "m", "messages": HELLO, "options": {"num_predict": 3}})
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "".join(line["message"]["content"] for line in lines) == "t0 t1 t2 "
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "length" and final["eval_count"] == 3
    assert final["prompt_eval_count"] == 1 and final["total_duration"] >= final["eval_duration"]


def test_names_with_latest_tag_and_load_only_requests() -> None:
    world = FakeWorld(load_seconds=0.0)
    with fake_client(world) as client:
        loaded = client.post("/api/generate", json={"model": "m:latest", "stream": False}).json()
        assert loaded["done_reason"] == "load" and world.loads == ["m"]
        unloaded = client.post("/api/generate", json={"model": "m", "keep_alive": 0, "stream": False}).json()
        assert unloaded["done_reason"] == "unload" and world.unloads == ["m"]


def test_errors_take_ollama_shape() -> None:
    with fake_client() as client:
        unknown = client.post("/api/chat", json={"model": "nope", "messages": HELLO})
        refused = client.post("/api/chat", json={"model": "m", "messages": HELLO, "think": True})
        images = client.post("/api/chat", json={"model": "m", "messages": [{**HELLO[0], "images": ["QQ=="]}]})
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    assert refused.status_code == 400 and "think" in refused.json()["error"]
    assert images.status_code == 400 and "does not accept images" in images.json()["error"]


def test_error_shape_follows_the_route_not_the_path() -> None:
    # With only the Ollama dialect served, a path nobody serves still gets Ollama's shape (the default), and a
    # /v1 path too: there is no OpenAI dialect to answer it.
    with fake_client(api=ApiMode.OLLAMA) as client:
        missing = client.get("/v1/models")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    with fake_client() as client:
        # Served by both: each route answers in its own shape.
        assert set(client.post("/api/show", json={}).json()) == {"error"}
        assert set(client.post("/v1/embeddings", json={}).json()["error"]) == {"message", "type", "param", "code"}
