"""A backend failing after the response has started: the NDJSON stream ends with an `{"error": ...}` line.

A real model does not fail on demand, so this backend (the app in-process) breaks after two tokens.
"""

from __future__ import annotations

from collections.abc import Generator

import orjson
import pytest
from fastapi.testclient import TestClient

from heylook_llm.api.app import create_app
from heylook_llm.backends.base import Backend, GeneratorBackend
from heylook_llm.config.registry import ModelEntry, parse_registry
from heylook_llm.config.settings import ApiMode, ServerSettings
from heylook_llm.errors import GenerationFailed
from heylook_llm.types import Feature, GenerationChunk, GenerationRequest
from tests.support.inprocess import LOCAL_BASE_URL

pytestmark = pytest.mark.unit


class BreaksAfterTwoTokens(GeneratorBackend):
    def load(self) -> None:
        self.facts.context_length = 128
        self.features = frozenset({Feature.CHAT, Feature.COMPLETION})

    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        yield GenerationChunk("one ", token_count=1)
        yield GenerationChunk("two ", token_count=1)
        raise GenerationFailed("the backend broke mid-way")

    def unload(self) -> None:
        pass


def _client() -> TestClient:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None
    )

    def factory(entry: ModelEntry, settings: ServerSettings) -> Backend:
        return BreaksAfterTwoTokens(entry, settings)

    app = create_app(ServerSettings(api=ApiMode.OLLAMA), registry, backend_factory=factory)
    return TestClient(app, base_url=LOCAL_BASE_URL)


def test_a_failure_mid_stream_is_a_last_error_line() -> None:
    with _client() as client:
        response = client.post("/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    # Tokens that arrive together may share a line; the text before the error is all there.
    assert "".join(line["message"]["content"] for line in lines[:-1]) == "one two "
    assert lines[-1] == {"error": "the backend broke mid-way"}


def test_the_same_failure_without_streaming_is_a_500_in_ollamas_shape() -> None:
    with _client() as client:
        response = client.post("/api/generate", json={"model": "m", "prompt": "hi", "stream": False})
    assert response.status_code == 500
    assert response.json() == {"error": "the backend broke mid-way"}
