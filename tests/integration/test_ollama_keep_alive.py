"""keep_alive seen from outside: load and unload requests, expiry visible in /api/ps, the server default.

Its own server, serving only the Ollama API with a short default keep-alive, so that expiring models does not
disturb the shared server's tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from ollama import Client

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

DEFAULT_KEEP_ALIVE = 3.0


@pytest.fixture(scope="module")
def ollama_only(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("ollama-only"),
        demo_dir / "models.yaml",
        "--api",
        "ollama",
        "--keep-alive",
        f"{DEFAULT_KEEP_ALIVE:g}s",
    )
    yield proc
    proc.stop()


@pytest.fixture()
def ollama(ollama_only: ServerProcess) -> Client:
    return Client(host=ollama_only.base_url, timeout=120)


def _loaded(client: Client) -> dict[str, datetime | None]:
    return {m.model or "": m.expires_at for m in client.ps().models}


def _eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Expiry is asynchronous: poll with a generous deadline, never assert an exact moment."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_only_the_ollama_api_is_served(ollama_only: ServerProcess) -> None:
    assert httpx.get(ollama_only.base_url + "/").text == "Ollama is running"
    assert httpx.get(ollama_only.base_url + "/v1/models").status_code == 404


def test_empty_requests_load_and_unload(ollama: Client) -> None:
    loaded = ollama.chat(model="demo-gguf", messages=[], keep_alive=-1)
    assert loaded.done and loaded.done_reason == "load" and loaded.message.content == ""
    expires = _loaded(ollama)["demo-gguf:latest"]
    assert expires is not None and expires.year >= 9999  # never expires
    unloaded = ollama.generate(model="demo-gguf:latest", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload" and unloaded.response == ""
    assert "demo-gguf:latest" not in _loaded(ollama)  # gone before the answer came
    again = ollama.generate(model="demo-gguf", keep_alive=0)
    assert again.done_reason == "unload" and "demo-gguf:latest" not in _loaded(ollama)


def test_keep_alive_duration_shows_in_ps_and_the_model_goes_by_itself(ollama: Client) -> None:
    before = datetime.now(UTC)
    ollama.generate(model="demo-gguf", prompt="hi", options={"num_predict": 2}, keep_alive="1m30s")
    expires = _loaded(ollama)["demo-gguf:latest"]
    assert expires is not None and 80 < (expires - before).total_seconds() < 100
    ollama.generate(model="demo-gguf", prompt="hi", options={"num_predict": 2}, keep_alive="1s")
    _eventually(lambda: "demo-gguf:latest" not in _loaded(ollama))


def test_keep_alive_zero_on_a_generation_unloads_after_it(ollama: Client) -> None:
    reply = ollama.chat(
        model="demo-gguf", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 4}, keep_alive=0
    )
    assert reply.eval_count == 4
    _eventually(lambda: "demo-gguf:latest" not in _loaded(ollama))


def test_server_default_keep_alive_applies_to_requests_that_do_not_say(ollama: Client) -> None:
    ollama.embed(model="demo-embed-gguf", input="hello")
    expires = _loaded(ollama)["demo-embed-gguf:latest"]
    assert expires is not None and (expires - datetime.now(UTC)).total_seconds() <= DEFAULT_KEEP_ALIVE
    _eventually(lambda: "demo-embed-gguf:latest" not in _loaded(ollama))
