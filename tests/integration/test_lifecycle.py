"""Disconnects, model swaps, start-up loading and load failures on real server processes."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def _client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)


def _wait_for_log(server: ServerProcess, pattern: str, timeout: float = 10.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.log())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the server log:\n{server.log()}")


def test_disconnect_mid_stream_stops_generation_and_frees_the_model(
    demo_dir: Path, tmp_path: Path, chat_model: str
) -> None:
    server = start_server(tmp_path, demo_dir / "models.yaml", "--model-id", chat_model)
    try:
        body = {
            "model": chat_model,
            "messages": [{"role": "user", "content": "talk for a long time"}],
            "max_tokens": 2000,
            "temperature": 0,
            "stream": True,
        }
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as response,
        ):
            assert response.status_code == 200
            lines = response.iter_lines()
            data_lines = [line for line in (next(lines) for _ in range(12)) if line.startswith("data:")]
            assert len(data_lines) >= 4
        # The connection is closed: the worker must notice within a few tokens.
        cancelled = _wait_for_log(server, r"cancelled after (\d+) tokens")
        assert int(cancelled.group(1)) < 1000
        started = time.monotonic()
        result = _client(server).chat.completions.create(
            model=chat_model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
        )
        assert result.usage is not None and result.usage.completion_tokens == 4
        assert time.monotonic() - started < 5.0
    finally:
        server.stop()


def test_two_models_alternate_with_one_slot(demo_dir: Path, tmp_path: Path) -> None:
    shutil.copy(demo_dir / "demo-gguf.gguf", tmp_path / "second.gguf")
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
max_loaded_models: 1
models:
  - id: first
    provider: llama_cpp
    config: {{model_path: {demo_dir / "demo-gguf.gguf"}, n_ctx: 512}}
  - id: second
    provider: llama_cpp
    config: {{model_path: second.gguf, n_ctx: 512, temperature: 0}}
"""
    )
    server = start_server(tmp_path, config)
    try:
        client = _client(server)
        answers = []
        for model in ["first", "second", "first", "second"]:
            result = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0
            )
            assert result.model == model
            answers.append(result.choices[0].message.content)
        # Same weights in both files, greedy: the same answer from each, loaded in turn.
        assert len(set(answers)) == 1
        log = server.log()
        assert log.count(": loading model 'first'") == 2 and log.count(": loading model 'second'") == 2
        assert log.count(": unloading model 'first'") == 2 and log.count(": unloading model 'second'") == 1
    finally:
        server.stop()


def test_default_model_loads_at_start_up(server: ServerProcess) -> None:
    _wait_for_log(server, r"loaded model 'demo-gguf'")


def test_broken_start_up_model_is_logged_not_fatal(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
default_model: broken
models:
  - {{id: broken, provider: llama_cpp, config: {{model_path: missing.gguf}}}}
  - {{id: fine, provider: llama_cpp, config: {{model_path: {demo_dir / "demo-gguf.gguf"}, n_ctx: 512}}}}
  - {{id: not-a-gguf, provider: llama_cpp, config: {{model_path: {config}}}}}
"""
    )
    server = start_server(tmp_path, config)
    try:
        _wait_for_log(server, r"could not load start-up model 'broken'.*missing\.gguf")
        client = _client(server)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
        assert "missing.gguf" in str(err.value) and "broken" in str(err.value)
        with pytest.raises(openai.InternalServerError, match="not-a-gguf"):
            client.chat.completions.create(model="not-a-gguf", messages=[{"role": "user", "content": "hi"}])
        ok = client.chat.completions.create(
            model="fine", messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
        )
        assert ok.usage is not None and ok.usage.completion_tokens == 2
    finally:
        server.stop()


def test_disabled_model_is_not_listed_or_served(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
models:
  - {{id: visible, provider: llama_cpp, config: {{model_path: {demo_dir / "demo-gguf.gguf"}, n_ctx: 512}}}}
  - {{id: hidden, provider: llama_cpp, enabled: false, config: {{model_path: {demo_dir / "demo-gguf.gguf"}}}}}
"""
    )
    server = start_server(tmp_path, config)
    try:
        client = _client(server)
        assert [m.id for m in client.models.list().data] == ["visible"]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="hidden", messages=[{"role": "user", "content": "hi"}])
        assert httpx.get(f"{server.base_url}/v1/models/hidden").status_code == 404
    finally:
        server.stop()


def test_concurrent_first_requests_load_the_model_once(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        f"models:\n  - {{id: lazy, provider: llama_cpp, config: {{model_path: {demo_dir / 'demo-gguf.gguf'}}}}}\n"
    )
    server = start_server(tmp_path, config)
    try:
        import concurrent.futures

        client = _client(server)

        def ask(_: int) -> int:
            result = client.chat.completions.create(
                model="lazy", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
            )
            assert result.usage is not None
            return result.usage.completion_tokens

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert list(pool.map(ask, range(6))) == [3] * 6
        assert server.log().count(": loading model 'lazy'") == 1
    finally:
        server.stop()
