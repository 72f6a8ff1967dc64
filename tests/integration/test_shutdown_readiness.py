"""SIGTERM: streams in flight get --shutdown-timeout seconds, then end with their dialect's error event and
terminator; a request that finishes in time is answered whole. /ready is 503 until the start-up model is loaded."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

# A context far past the demo model's 2,048 tokens makes each token slow enough (about 1 ms) for a 20,000-token
# answer to outlast the shutdown timeout; greedy decoding after "hello" never picks the end-of-sequence token.
LONG = 20_000


def _slow_config(demo_dir: Path, folder: Path, **top: Any) -> Path:
    entry = {
        "id": "slow",
        "provider": "llama_cpp",
        "config": {"model_path": str(demo_dir / "demo-gguf.gguf"), "n_ctx": 32768, "parallel": 3},
    }
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump({"models": [entry], **top}))
    return config


def _read_sse(url: str, body: dict[str, Any], out: list[str], started: threading.Event) -> None:
    with httpx.stream("POST", url, json=body, timeout=60) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                out.append(line[len("data: ") :])
                started.set()


def _read_ndjson(url: str, body: dict[str, Any], out: list[str], started: threading.Event) -> None:
    with httpx.stream("POST", url, json=body, timeout=60) as reply:
        for line in reply.iter_lines():
            if line:
                out.append(line)
                started.set()


def test_sigterm_ends_streams_with_the_dialects_error_event(demo_dir: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path, _slow_config(demo_dir, tmp_path), "--shutdown-timeout", "1")
    openai: list[str] = []
    ollama: list[str] = []
    short: list[str] = []
    readers = []
    for target, url, body, out in [
        (
            _read_sse,
            f"{server.base_url}/v1/completions",
            {"model": "slow", "prompt": "hello", "max_tokens": LONG, "temperature": 0, "stream": True},
            openai,
        ),
        (
            _read_ndjson,
            f"{server.base_url}/api/generate",
            {"model": "slow", "prompt": "hello", "raw": True, "options": {"num_predict": LONG, "temperature": 0}},
            ollama,
        ),
    ]:
        started = threading.Event()
        thread = threading.Thread(target=target, args=(url, body, out, started), daemon=True)
        thread.start()
        assert started.wait(30), server.log()
        readers.append(thread)
    # A short answer started just before the signal finishes within the timeout.
    started = threading.Event()
    short_body = {"model": "slow", "prompt": "hello", "max_tokens": 300, "temperature": 0, "stream": True}
    short_reader = threading.Thread(
        target=_read_sse, args=(f"{server.base_url}/v1/completions", short_body, short, started), daemon=True
    )
    short_reader.start()
    assert started.wait(30)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for thread in [*readers, short_reader]:
        thread.join(30)
        assert not thread.is_alive()
    # uvicorn raises the signal it caught again once it has shut down: a clean stop reads as killed by SIGTERM.
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    took = time.monotonic() - signalled
    server.stop()
    assert 1.0 <= took < 8, took

    assert openai[-1] == "[DONE]", openai[-3:]
    error = json.loads(openai[-2])["error"]
    assert error["code"] == "server_shutting_down" and "shutdown timeout" in error["message"]
    assert json.loads(ollama[-1])["error"].startswith("the server shut down")
    assert short[-1] == "[DONE]" and json.loads(short[-2])["choices"][0]["finish_reason"] == "length"


def test_ready_is_503_until_the_startup_model_is_loaded(demo_dir: Path, tmp_path: Path) -> None:
    # The MLX demo model takes a second or more to load (mlx-lm's imports), so /ready is seen loading first.
    server = ServerProcess(["--config", str(demo_dir / "models.yaml"), "--model-id", "demo-mlx"], tmp_path / "log")
    try:
        seen: list[tuple[int, str]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                reply = httpx.get(f"{server.base_url}/ready", timeout=2)
            except httpx.HTTPError:
                assert server.proc.poll() is None, server.log()
                time.sleep(0.05)
                continue
            seen.append((reply.status_code, reply.json()["status"]))
            if reply.status_code == 200:
                break
            time.sleep(0.05)
        assert seen[0] == (503, "loading"), seen
        assert seen[-1] == (200, "ready"), seen
        assert httpx.get(f"{server.base_url}/ready", timeout=2).json() == {"status": "ready", "model": "demo-mlx"}
    finally:
        server.stop()


def test_ready_stays_503_when_the_startup_model_fails(demo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"not a model")
    entry = {"id": "broken", "provider": "llama_cpp", "config": {"model_path": "broken.gguf"}}
    config = tmp_path / "models.yaml"
    config.write_text(yaml.safe_dump({"models": [entry], "default_model": "broken"}))
    server = start_server(tmp_path, config)
    try:
        deadline = time.monotonic() + 30
        while (reply := httpx.get(f"{server.base_url}/ready", timeout=5)).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert reply.status_code == 503
        body = reply.json()
        assert body["status"] == "failed" and body["model"] == "broken"
        assert "llama.cpp could not load broken.gguf" in body["reason"]
        assert str(tmp_path) not in reply.text
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
    finally:
        server.stop()
