"""heylookllm in front of other heylookllm processes (OpenAI-compatible and Ollama upstreams), all on loopback:
every dialect through the upstream path, streaming, forced tool calls, upstream errors in our dialects' shapes,
listings and metrics, two replicas sharing load, a replica killed and restarted mid-test, and the shutdown drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_server
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}


class FixedPortServer:
    """A heylookllm process on a chosen port, so that it can be killed and started again at the same address."""

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        self.config = config
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "heylook_llm", "--config", str(self.config), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"upstream not ready:\n{self.log_path.read_text(errors='replace')}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def replica_b(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixedPortServer]:
    folder = tmp_path_factory.mktemp("b")
    tools = {"model_path": str(demo_dir / "demo-tools-gguf.gguf"), "n_ctx": 2048}
    # A context far past the demo model's own makes each token slow (about 1 ms): a long answer outlasts a kill.
    slow = {"model_path": str(demo_dir / "demo-gguf.gguf"), "n_ctx": 32768}
    models = [
        {"id": "demo-tools-gguf", "provider": "llama_cpp", "config": tools},
        {"id": "slow", "provider": "llama_cpp", "config": slow},
    ]
    (folder / "models.yaml").write_text(json.dumps({"models": models}))
    upstream = FixedPortServer(folder / "models.yaml", free_port(), folder / "b.log")
    upstream.start()
    yield upstream
    upstream.kill()


@pytest.fixture(scope="module")
def front(
    server: ServerProcess, replica_b: FixedPortServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """heylookllm whose models all run on the upstreams: `server` (A) and `replica_b` (B)."""
    a, b = server.base_url, replica_b.base_url
    models = [
        {
            "id": "remote-tools",
            "provider": "openai_compatible",
            "config": {
                "base_url": f"{a}/v1",
                "model": "demo-tools-gguf",
                "replicas": [{"base_url": f"{b}/v1"}],
                "health_check_seconds": 0.5,
            },
        },
        {"id": "remote-ollama", "provider": "ollama", "config": {"base_url": a, "model": "demo-tools-gguf"}},
        {
            "id": "remote-embed",
            "provider": "openai_compatible",
            "config": {"base_url": f"{a}/v1", "model": "demo-embed-gguf", "features": ["embedding"]},
        },
        {
            "id": "remote-think",
            "provider": "openai_compatible",
            "config": {
                "base_url": f"{a}/v1",
                "model": "demo-think-gguf",
                "features": ["chat", "reasoning", "logprobs"],
                "reasoning_format": "think",
            },
        },
        {
            "id": "only-b",
            "provider": "openai_compatible",
            "config": {"base_url": f"{b}/v1", "model": "slow", "health_check_seconds": 0.5},
        },
    ]
    folder = tmp_path_factory.mktemp("front")
    config = folder / "models.yaml"
    config.write_text(json.dumps({"models": models}))  # JSON is YAML
    proc = start_server(folder, config)
    yield proc
    proc.stop()


@pytest.fixture()
def client(front: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{front.base_url}/v1", api_key="x", max_retries=0, timeout=60)


def _replicas(front: ServerProcess, model: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{front.base_url}/api/ps", timeout=10).json()["models"]
    row = next(r for r in rows if r["name"] == f"{model}:latest")
    replicas: list[dict[str, Any]] = row["replicas"]
    return replicas


def _wait_health(front: ServerProcess, model: str, index: int, *, healthy: bool, seconds: float) -> bool:
    """The replica's health once it is `healthy` or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _replicas(front, model)[index]["healthy"] == healthy:
            break
        time.sleep(0.2)
    return bool(_replicas(front, model)[index]["healthy"])


def test_openai_chat_streams_through_an_openai_compatible_upstream(client: OpenAI) -> None:
    whole = client.chat.completions.create(
        model="remote-tools", messages=[{"role": "user", "content": "hi"}], max_tokens=6, seed=1, temperature=0
    )
    assert whole.model == "remote-tools"
    assert whole.usage is not None and whole.usage.completion_tokens == 6 and whole.usage.prompt_tokens > 0
    assert whole.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(
        model="remote-tools",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=6,
        seed=1,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Greedy decoding on the same upstream model: the stream says what the whole reply said.
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_choices_and_raw_completions_go_upstream(client: OpenAI) -> None:
    several = client.chat.completions.create(
        model="remote-tools", messages=[{"role": "user", "content": "hi"}], max_tokens=3, n=2
    )
    assert [c.index for c in several.choices] == [0, 1]
    assert several.usage is not None and several.usage.completion_tokens == 6
    completion = client.completions.create(model="remote-tools", prompt="once upon a time", max_tokens=4)
    assert completion.choices[0].finish_reason == "length" and completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_reasoning_and_logprobs_pass_through(client: OpenAI, front: ServerProcess) -> None:
    ask: Any = [{"role": "user", "content": "why?"}]
    on = client.chat.completions.create(model="remote-think", messages=ask, max_tokens=12, reasoning_effort="high")
    assert (on.choices[0].message.model_extra or {}).get("reasoning_content")
    off = client.chat.completions.create(model="remote-think", messages=ask, max_tokens=12, reasoning_effort="none")
    assert not (off.choices[0].message.model_extra or {}).get("reasoning_content") and off.choices[0].message.content
    thinking = ollama.Client(host=front.base_url).chat(
        model="remote-think", messages=ask, think=True, options={"num_predict": 12}
    )
    assert thinking.message.thinking
    scored = client.chat.completions.create(
        model="remote-think", messages=ask, max_tokens=4, logprobs=True, top_logprobs=2, reasoning_effort="none"
    )
    tokens = scored.choices[0].logprobs.content if scored.choices[0].logprobs is not None else None
    assert tokens and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    # Token bytes pass through (a token may hold part of a UTF-8 character).
    text = b"".join(bytes(t.bytes or []) for t in tokens).decode("utf-8", "replace")
    assert text == scored.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:  # not declared for this entry
        client.chat.completions.create(model="remote-think", messages=ask, tools=[WEATHER])  # type: ignore[list-item]
    assert refused.value.param == "tools"


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_tool_call_passes_through(client: OpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = {
        "model": "remote-tools",
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 200,
    }
    if not stream:
        reply = client.chat.completions.create(**kwargs)
        assert reply.choices[0].finish_reason == "tool_calls"
        calls = reply.choices[0].message.tool_calls or []
        assert len(calls) == 1 and calls[0].type == "function" and calls[0].function.name == "get_weather"
        assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
        return
    names, arguments, finish = [], "", None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            names += [delta.function.name] if delta.function and delta.function.name else []
            arguments += delta.function.arguments or "" if delta.function else ""
        finish = chunk.choices[0].finish_reason if chunk.choices else finish
    assert names == ["get_weather"] and finish == "tool_calls"
    assert isinstance(json.loads(arguments)["city"], str)


def test_ollama_dialect_in_front_of_both_upstream_kinds(front: ServerProcess) -> None:
    client = ollama.Client(host=front.base_url, timeout=60)
    for model in ("remote-tools", "remote-ollama"):
        parts = list(
            client.chat(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True, options={"num_predict": 5}
            )
        )
        assert parts[-1].done and parts[-1].eval_count == 5 and parts[-1].done_reason == "length"
        reply = client.chat(
            model=model,
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER],
            format=None,
            options={"num_predict": 200},
        )
        assert reply.done
    # Forcing a call has no Ollama equivalent: refused by name, in OpenAI's shape, not ignored.
    with pytest.raises(openai.BadRequestError) as refused:
        OpenAI(base_url=f"{front.base_url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="remote-ollama",
            messages=[{"role": "user", "content": "hi"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="required",
        )
    assert refused.value.body is not None and refused.value.body.get("param") == "tool_choice"  # type: ignore[union-attr]


def test_structured_output_through_the_ollama_upstream(front: ServerProcess) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    reply = ollama.Client(host=front.base_url, timeout=60).chat(
        model="remote-ollama",
        messages=[{"role": "user", "content": "a number"}],
        format=schema,
        options={"num_predict": 60},
    )
    assert isinstance(json.loads(reply.message.content or "")["ok"], bool)


def test_anthropic_messages_through_the_upstream(front: ServerProcess) -> None:
    client = anthropic.Anthropic(base_url=front.base_url, api_key="x", max_retries=0, timeout=60)
    message = client.messages.create(model="remote-tools", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5
    with client.messages.stream(
        model="remote-tools", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"


def test_an_upstream_client_error_reaches_the_client_in_each_dialect(front: ServerProcess, client: OpenAI) -> None:
    long = "hello world " * 3000  # past the upstream's prompt limit for its 2048-token context
    with pytest.raises(openai.BadRequestError) as openai_error:
        client.chat.completions.create(model="remote-tools", messages=[{"role": "user", "content": long}], max_tokens=4)
    assert "answered 400" in openai_error.value.message
    with pytest.raises(ollama.ResponseError) as ollama_error:
        ollama.Client(host=front.base_url).chat(model="remote-ollama", messages=[{"role": "user", "content": long}])
    assert ollama_error.value.status_code == 400 and "answered 400" in ollama_error.value.error
    with pytest.raises(anthropic.BadRequestError) as anthropic_error:
        anthropic.Anthropic(base_url=front.base_url, api_key="x", max_retries=0).messages.create(
            model="remote-tools", max_tokens=4, messages=[{"role": "user", "content": long}]
        )
    assert anthropic_error.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_embeddings_pass_through(client: OpenAI, front: ServerProcess) -> None:
    vectors = client.embeddings.create(model="remote-embed", input=["a fox", "a dog"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 8
    embedded = ollama.Client(host=front.base_url).embed(model="remote-embed", input="a fox")
    assert embedded.embeddings[0] == pytest.approx(vectors.data[0].embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError):  # not declared: refused here, before any upstream call
        client.embeddings.create(model="remote-tools", input="a fox")


def test_upstream_models_are_listed_as_remote(
    front: ServerProcess, server: ServerProcess, replica_b: FixedPortServer
) -> None:
    OpenAI(base_url=f"{front.base_url}/v1", api_key="x", max_retries=0).chat.completions.create(
        model="remote-tools", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    ids = [m["id"] for m in httpx.get(f"{front.base_url}/v1/models").json()["data"]]
    assert ids == ["remote-tools", "remote-ollama", "remote-embed", "remote-think", "only-b"]
    tags = {m["name"]: m for m in httpx.get(f"{front.base_url}/api/tags").json()["models"]}
    assert tags["remote-ollama:latest"]["remote_host"] == server.base_url
    assert tags["remote-ollama:latest"]["remote_model"] == "demo-tools-gguf"
    shown = ollama.Client(host=front.base_url).show("remote-tools")
    assert shown.capabilities is not None and "tools" in shown.capabilities and shown.details is not None
    assert shown.details.format == "remote"
    replicas = _replicas(front, "remote-tools")
    assert [r["base_url"] for r in replicas] == [f"{server.base_url}/v1", f"{replica_b.base_url}/v1"]
    performance = httpx.get(f"{front.base_url}/v1/performance").json()
    assert {u["model"] for u in performance["upstreams"]} == {
        "remote-tools",
        "remote-ollama",
        "remote-embed",
        "remote-think",
        "only-b",
    }
    assert "remote-tools" in performance["models"]  # its generations are counted like a local model's


def test_two_replicas_share_the_load(client: OpenAI, front: ServerProcess) -> None:
    before = [r["requests"] for r in _replicas(front, "remote-tools")]

    def ask(i: int) -> str | None:
        reply = client.chat.completions.create(
            model="remote-tools", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=24
        )
        return reply.choices[0].finish_reason

    with ThreadPoolExecutor(8) as pool:
        finishes = list(pool.map(ask, range(16)))
    assert all(f in ("stop", "length") for f in finishes)
    after = [r["requests"] for r in _replicas(front, "remote-tools")]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 16 and min(served) >= 3, served
    metrics = httpx.get(f"{front.base_url}/metrics").text
    assert 'heylook_upstream_requests_total{base_url="' in metrics and 'replica="replica 2"' in metrics


def test_a_killed_replica_is_taken_out_and_comes_back(
    client: OpenAI, front: ServerProcess, replica_b: FixedPortServer
) -> None:
    # A stream on B that B stops answering after its first token ends with OpenAI's stream error event.
    # Greedy decoding after "hello" never picks the end-of-sequence token: 20,000 slow tokens outlast the kill.
    with httpx.stream(
        "POST",
        f"{front.base_url}/v1/completions",
        json={"model": "only-b", "prompt": "hello", "max_tokens": 20_000, "temperature": 0, "stream": True},
        timeout=60,
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "text_completion" in first
        replica_b.kill()
        rest = [line for line in lines if line.startswith("data: ")]
    assert not any('"finish_reason":"' in line for line in rest)
    assert '"code":"generation_failed"' in rest[-2] and "failed while answering" in rest[-2]
    assert rest[-1] == "data: [DONE]"
    # Requests keep succeeding on A while B is down; B is marked down.
    for i in range(4):
        reply = client.chat.completions.create(
            model="remote-tools", messages=[{"role": "user", "content": f"still there {i}"}], max_tokens=4
        )
        assert reply.choices[0].finish_reason == "length"
    assert not _wait_health(front, "remote-tools", 1, healthy=False, seconds=10)
    # Restarted at the same address, B passes a health check and is back in rotation.
    replica_b.start()
    assert _wait_health(front, "remote-tools", 1, healthy=True, seconds=30)
    assert _wait_health(front, "only-b", 0, healthy=True, seconds=30)
    reply = client.chat.completions.create(model="only-b", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].finish_reason == "length"


def test_shutdown_ends_upstream_streams_with_the_error_event(demo_dir: Path, tmp_path: Path) -> None:
    # A context far past the demo model's own makes each token slow enough to outlast the shutdown timeout.
    slow = {
        "id": "slow",
        "provider": "llama_cpp",
        "config": {"model_path": str(demo_dir / "demo-gguf.gguf"), "n_ctx": 32768},
    }
    (tmp_path / "upstream").mkdir()
    upstream_config = tmp_path / "upstream" / "models.yaml"
    upstream_config.write_text(json.dumps({"models": [slow]}))
    upstream = FixedPortServer(upstream_config, free_port(), tmp_path / "upstream.log")
    upstream.start()
    try:
        remote = {
            "id": "remote-slow",
            "provider": "openai_compatible",
            "config": {"base_url": f"{upstream.base_url}/v1", "model": "slow"},
        }
        (tmp_path / "front").mkdir()
        front_config = tmp_path / "front" / "models.yaml"
        front_config.write_text(json.dumps({"models": [remote]}))
        front = start_server(tmp_path / "front", front_config, "--shutdown-timeout", "1")
        # Greedy decoding after "hello" never picks the end-of-sequence token (as in test_shutdown_readiness.py).
        body = {"model": "remote-slow", "prompt": "hello", "max_tokens": 20_000, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{front.base_url}/v1/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            signalled = time.monotonic()
            front.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        took = time.monotonic() - signalled
        front.stop()
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][len("data: ") :])["error"]
        assert error["code"] == "server_shutting_down" and 1.0 <= took < 10, (error, took)
    finally:
        upstream.kill()
