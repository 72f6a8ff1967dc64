"""The real app in-process, in front of the engine façade with fake backends: dialect logic without a server
process or a model (milliseconds per request)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from heylook_llm.api.app import create_app
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ApiMode, ServerSettings
from tests.support.fake_backend import FakeWorld

LOCAL_BASE_URL = "http://127.0.0.1"
"""Base URL for a TestClient of the app: the security layer refuses TestClient's default host "testserver"."""


def fake_client(
    world: FakeWorld | None = None, api: ApiMode = ApiMode.BOTH, ids: tuple[str, ...] = ("m",)
) -> TestClient:
    """A TestClient (use it as a context manager, so the app's lifespan runs) serving fake models `ids`; their
    text is "t0 t1 t2 ..." up to max_tokens, then finish_reason length."""
    registry = parse_registry(
        {"models": [{"id": i, "provider": "llama_cpp", "config": {"model_path": f"{i}.gguf"}} for i in ids]}, None
    )
    world = world or FakeWorld(load_seconds=0.0)
    # The app answers only loopback host names by default (api/security): TestClient's own is "testserver".
    app = create_app(ServerSettings(api=api), registry, backend_factory=world.factory)
    return TestClient(app, base_url=LOCAL_BASE_URL)
