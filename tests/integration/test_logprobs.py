"""Log probabilities over HTTP on both backends, with the openai and ollama clients: greedy tokens are the most
likely, top lists are sorted and as long as asked, streamed values equal whole ones, the JSON follows OpenAI's
published schemas, and the same weights on llama.cpp and MLX give the same values."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from ollama import Client
from openai import OpenAI

from tests.integration.test_openai_wire_spec import assert_conforms
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

ASK: list[Any] = [{"role": "user", "content": "Compare the two backends, please"}]
PARITY = 0.01
TOP = 3


def _chat(client: OpenAI, model: str, **extra: Any) -> Any:
    body: dict[str, Any] = {"max_tokens": 24, "temperature": 0, "logprobs": True, "top_logprobs": TOP, **extra}
    return client.chat.completions.create(model=model, messages=ASK, **body)


def test_greedy_tokens_are_the_most_likely_and_tops_sorted(client: OpenAI, chat_model: str) -> None:
    reply = _chat(client, chat_model)
    content = reply.choices[0].logprobs.content
    assert reply.usage is not None and len(content) == reply.usage.completion_tokens
    for token in content:
        values = [t.logprob for t in token.top_logprobs]
        assert len(values) == TOP and values == sorted(values, reverse=True)
        assert token.logprob == values[0] and token.token == token.top_logprobs[0].token
        assert token.bytes is not None
    assert "".join(bytes(t.bytes or []).decode("utf-8", "replace") for t in content).startswith(
        reply.choices[0].message.content or "\0"
    )


def test_streamed_logprobs_equal_the_whole_ones(client: OpenAI, chat_model: str) -> None:
    whole = _chat(client, chat_model).choices[0].logprobs.content
    streamed = [
        token
        for chunk in _chat(client, chat_model, stream=True)
        if chunk.choices and chunk.choices[0].logprobs
        for token in chunk.choices[0].logprobs.content or []
    ]
    assert [t.token for t in streamed] == [t.token for t in whole]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(streamed, whole, strict=True)) < 1e-6


def test_the_same_weights_agree_on_both_backends(client: OpenAI) -> None:
    gguf, mlx = (_chat(client, m, max_tokens=40).choices[0].logprobs.content for m in ("demo-gguf", "demo-mlx"))
    same = 0
    while same < min(len(gguf), len(mlx)) and gguf[same].token == mlx[same].token:
        same += 1
    assert same >= 8, "greedy runs diverged too early to compare"
    assert max(abs(a.logprob - b.logprob) for a, b in zip(gguf[:same], mlx[:same], strict=True)) < PARITY


def test_the_wire_shapes_follow_the_spec(server: ServerProcess, chat_model: str) -> None:
    base = {"model": chat_model, "max_tokens": 6, "temperature": 0}
    chat = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={**base, "messages": ASK, "logprobs": True, "top_logprobs": 2},
        timeout=60,
    ).json()
    assert_conforms(chat, "CreateChatCompletionResponse")
    legacy = httpx.post(f"{server.base_url}/v1/completions", json={**base, "prompt": "Once", "logprobs": 2}, timeout=60)
    body = legacy.json()
    assert_conforms(body, "CreateCompletionResponse")
    logprobs = body["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["text_offset"]) == 6
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])


def test_ollama_logprobs(server: ServerProcess, chat_model: str) -> None:
    ollama = Client(host=server.base_url, timeout=60)
    options = {"num_predict": 8, "temperature": 0}
    reply = ollama.chat(model=chat_model, messages=ASK, options=options, logprobs=True, top_logprobs=2)
    assert reply.logprobs is not None and len(reply.logprobs) == reply.eval_count
    for entry in reply.logprobs:
        assert entry.top_logprobs is not None and len(entry.top_logprobs) == 2
        assert entry.logprob == entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    streamed = [
        e
        for part in ollama.chat(model=chat_model, messages=ASK, options=options, logprobs=True, stream=True)
        for e in part.logprobs or []
    ]
    assert [e.token for e in streamed] == [e.token for e in reply.logprobs]
    generated = ollama.generate(model=chat_model, prompt="Once", options=options, logprobs=True)
    assert generated.logprobs is not None and len(generated.logprobs) == generated.eval_count
