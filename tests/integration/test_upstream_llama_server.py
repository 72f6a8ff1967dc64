"""heylookllm in front of llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on loopback:
our OpenAI and Ollama dialects through it, streaming, and its errors in our dialects' shapes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_server
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.integration

CONTEXT = 512
KEY = "upstream-key"


@pytest.fixture(scope="module")
def llama_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(demo_dir / "demo-gguf.gguf"),
                "--model_alias",
                "demo",
                "--n_ctx",
                str(CONTEXT),
                "--n_threads",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--api_key",
                KEY,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            try:
                headers = {"Authorization": f"Bearer {KEY}"}
                if httpx.get(f"{base_url}/models", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def front(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("front-llama-server")
    config = folder / "models.yaml"
    models = [
        {"id": "llama-remote", "provider": "openai_compatible", "config": {"base_url": llama_server, "model": "demo"}},
        {
            "id": "llama-wrong-key",
            "provider": "openai_compatible",
            "config": {"base_url": llama_server, "model": "demo", "api_key": "not-the-key"},
        },
    ]
    config.write_text(json.dumps({"models": models}))
    # The key comes from the environment (api_key_env), as it would in production.
    models[0]["config"]["api_key_env"] = "LLAMA_SERVER_KEY"  # type: ignore[index]
    config.write_text(json.dumps({"models": models}))
    proc = start_server(folder, config, env={"LLAMA_SERVER_KEY": KEY})
    yield proc
    proc.stop()


def test_openai_dialect_streams_through_llama_server(front: ServerProcess) -> None:
    client = OpenAI(base_url=f"{front.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    whole = client.chat.completions.create(
        model="llama-remote", messages=[{"role": "user", "content": "hi"}], max_tokens=5, seed=3, temperature=0
    )
    assert whole.model == "llama-remote" and whole.choices[0].finish_reason in ("length", "stop")
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 5
    chunks = list(
        client.chat.completions.create(
            model="llama-remote",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            seed=3,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["length"], ["stop"])


def test_ollama_dialect_through_llama_server(front: ServerProcess) -> None:
    parts = list(
        ollama.Client(host=front.base_url, timeout=60).chat(
            model="llama-remote",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            options={"num_predict": 4, "seed": 3, "temperature": 0},
        )
    )
    assert parts[-1].done and parts[-1].done_reason in ("length", "stop")
    assert "".join(p.message.content or "" for p in parts) != "" or parts[-1].done_reason == "stop"


def test_llama_server_errors_reach_the_client_in_our_shapes(front: ServerProcess) -> None:
    client = OpenAI(base_url=f"{front.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    # The upstream refuses the key: this server's misconfiguration, a 5xx that names the upstream's 401 (a 500
    # from the request itself, or a 503 once the health check found the replica unusable).
    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model="llama-wrong-key", messages=[{"role": "user", "content": "hi"}])
    assert "answered 401" in error.value.message
    with pytest.raises(ollama.ResponseError) as ollama_error:
        ollama.Client(host=front.base_url).chat(model="llama-wrong-key", messages=[{"role": "user", "content": "hi"}])
    assert ollama_error.value.status_code in (500, 503) and "answered 401" in ollama_error.value.error
    # llama-cpp-python refuses a streamed prompt past its context with an empty answer: a clear 500, not a hang.
    with pytest.raises(openai.InternalServerError) as empty:
        client.chat.completions.create(
            model="llama-remote", messages=[{"role": "user", "content": "hello world " * CONTEXT}], max_tokens=4
        )
    assert "empty stream" in empty.value.message
    # A refused request is not an outage: the replica with the right key stays in rotation.
    rows = {m["name"]: m for m in httpx.get(f"{front.base_url}/api/ps").json()["models"]}
    assert rows["llama-remote:latest"]["replicas"][0]["healthy"]
