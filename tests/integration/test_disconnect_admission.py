"""Nothing runs for a client that is gone or refused: queued requests are dropped when their client disconnects
(streamed or not), a multi-prompt request is admitted whole or not at all, and one larger than the queue can ever
hold is a 413 naming the limit."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

DROPPED = "cancelled before its prompt was evaluated: dropped"


@pytest.fixture(scope="module")
def one_slot(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One sequence slot and a context far past the demo model's 2,048 tokens, so that a long answer takes
    seconds (about 1 ms a token) and every other request waits in the queue."""
    folder = tmp_path_factory.mktemp("one-slot")
    models = [
        {
            "id": "slow",
            "provider": "llama_cpp",
            "config": {"model_path": str(demo_dir / "demo-gguf.gguf"), "n_ctx": 32768, "parallel": 1},
        },
        {"id": "quick", "provider": "llama_cpp", "config": {"model_path": str(demo_dir / "demo-gguf.gguf")}},
    ]
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump({"models": models, "max_loaded_models": 2}))
    server = start_server(folder, config)
    yield server
    server.stop()


def _metric(server: ServerProcess, name: str, model: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    match = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _blocker(server: ServerProcess, stop: threading.Event, started: threading.Event) -> None:
    body = {"model": "slow", "prompt": "hello", "max_tokens": 20_000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=60) as reply:
        for _ in reply.iter_lines():
            started.set()
            if stop.is_set():
                return


def _wait_for(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_queued_is_dropped(one_slot: ServerProcess, stream: bool) -> None:
    server = one_slot
    stop, started = threading.Event(), threading.Event()
    blocker = threading.Thread(target=_blocker, args=(server, stop, started), daemon=True)
    blocker.start()
    assert started.wait(30)
    dropped_before = server.log().count(DROPPED)
    finished_before = _metric(server, "heylook_generations_total", "slow")
    body = {"model": "slow", "prompt": "queued", "max_tokens": 50, "stream": stream}
    url = f"{server.base_url}/v1/completions"
    for _ in range(3):
        # The slot is busy: the request waits in the queue until the client gives up and disconnects.
        with pytest.raises(httpx.ReadTimeout), httpx.stream("POST", url, json=body, timeout=0.5) as reply:
            reply.read()
    _wait_for(lambda: server.log().count(DROPPED) == dropped_before + 3)
    stop.set()
    blocker.join(30)
    # The blocker was cancelled too; none of the queued requests was ever admitted.
    time.sleep(0.5)
    assert _metric(server, "heylook_generations_total", "slow") == finished_before
    quick = {"model": "slow", "prompt": "after", "max_tokens": 5}
    assert httpx.post(f"{server.base_url}/v1/completions", json=quick, timeout=30).status_code == 200
    assert _metric(server, "heylook_generations_total", "slow") == finished_before + 1  # counted, once


def test_more_prompts_than_the_queue_holds_is_a_413_naming_the_limit(one_slot: ServerProcess) -> None:
    server = one_slot
    before = (_metric(server, "heylook_generations_total", "quick"), server.log().count("cancelled after"))
    body = {"model": "quick", "prompt": [f"prompt {i}" for i in range(100)], "max_tokens": 500}
    started = time.monotonic()
    reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=30)
    assert reply.status_code == 413
    error = reply.json()["error"]
    assert "max_queued_requests_per_model is 64" in error["message"] and error["param"] == "prompt"
    assert "retry-after" not in reply.headers
    assert time.monotonic() - started < 5
    time.sleep(0.5)
    after = (_metric(server, "heylook_generations_total", "quick"), server.log().count("cancelled after"))
    assert after == before


def test_a_failing_prompt_cancels_the_others(one_slot: ServerProcess) -> None:
    server = one_slot
    finished = _metric(server, "heylook_generations_total", "quick")
    prompts = ["one", "", "three", "four", "five", "six"]
    body = {"model": "quick", "prompt": prompts, "max_tokens": 1500, "temperature": 0}
    reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"] == "the prompt is empty"
    time.sleep(1.0)
    # None of the five others ran to its end: those admitted were cancelled, those queued dropped.
    assert _metric(server, "heylook_generations_total", "quick") == finished


def test_n_choices_are_admitted_whole(one_slot: ServerProcess) -> None:
    server = one_slot
    body = {
        "model": "quick",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "n": 3,
    }
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200
    assert [c["index"] for c in reply.json()["choices"]] == [0, 1, 2]
