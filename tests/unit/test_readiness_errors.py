"""In-process: /ready follows the start-up model; unexpected errors answer a generic body with an id."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from heylook_llm.api.app import create_app
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from tests.support.fake_backend import FakeWorld
from tests.support.inprocess import LOCAL_BASE_URL

pytestmark = pytest.mark.unit


def _client(world: FakeWorld, startup: str | None) -> TestClient:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None
    )
    settings = ServerSettings(startup_model_id=startup)
    return TestClient(create_app(settings, registry, backend_factory=world.factory), base_url=LOCAL_BASE_URL)


def test_ready_is_503_while_the_startup_model_loads_then_200() -> None:
    with _client(FakeWorld(load_seconds=0.5), "m") as client:
        first = client.get("/ready")
        assert first.status_code == 503
        assert first.json() == {"status": "loading", "model": "m", "reason": "the start-up model 'm' is loading"}
        assert first.headers["retry-after"] == "1"
        assert client.get("/health").status_code == 200  # liveness does not wait
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/ready").json() == {"status": "ready", "model": "m"}


def test_ready_reports_a_failed_startup_model() -> None:
    with _client(FakeWorld(load_seconds=0.0, fail_loading={"m"}), "m") as client:
        deadline = time.monotonic() + 10
        while (reply := client.get("/ready")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert reply.status_code == 503
        assert reply.json()["status"] == "failed" and "told to fail" in reply.json()["reason"]


def test_ready_at_once_without_a_startup_model() -> None:
    with _client(FakeWorld(load_seconds=0.0), None) as client:
        assert client.get("/ready").json() == {"status": "ready"}


def test_an_unexpected_error_answers_a_generic_message_with_an_id() -> None:
    client = _client(FakeWorld(load_seconds=0.0), None)

    @client.app.get("/v1/boom")  # type: ignore[attr-defined, untyped-decorator]
    async def boom() -> None:
        raise RuntimeError("/home/secret/models/x.gguf exploded")

    with TestClient(client.app, raise_server_exceptions=False, base_url=LOCAL_BASE_URL) as raw:
        reply = raw.get("/v1/boom")
    assert reply.status_code == 500
    message = reply.json()["error"]["message"]
    assert "RuntimeError" not in message and "/home/secret" not in message
    assert reply.headers["x-error-id"] in message
