"""Reasoning and log probabilities through both dialects, in-process against the engine façade with a fake backend:
request fields become neutral controls, parsed output becomes OpenAI's and Ollama's JSON, streamed and not, and
the OpenAI shapes validate against OpenAI's published schemas."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from heylook_llm.demo.tokenizer import THINK_TEMPLATE
from heylook_llm.types import Feature, ReasoningControl
from tests.integration.test_openai_wire_spec import _streamed_completion_document, assert_conforms
from tests.support.fake_backend import FakeWorld
from tests.support.inprocess import fake_client

pytestmark = pytest.mark.unit

HELLO = [{"role": "user", "content": "hi"}]
PIECES = ["Let me", " think", "\n</think>", "\n\nHello", " there"]
STEERED = frozenset({Feature.CHAT, Feature.COMPLETION, Feature.LOGPROBS, Feature.REASONING})


def _thinking_world(**extra: Any) -> FakeWorld:
    fields: dict[str, Any] = {
        "load_seconds": 0.0,
        "features": STEERED,
        "chat_template": THINK_TEMPLATE,
        "pieces": PIECES,
        "opens_reasoning": True,
    }
    return FakeWorld(**{**fields, **extra})


def _sse(text: str) -> list[Any]:
    payloads = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def _ndjson(text: str) -> list[Any]:
    return [orjson.loads(line) for line in text.splitlines() if line]


CHAT = {"model": "m", "messages": HELLO, "logprobs": True, "top_logprobs": 2, "max_tokens": 50}


def test_openai_chat_has_reasoning_under_both_names_and_logprobs_streamed_alike() -> None:
    with fake_client(_thinking_world()) as client:
        whole = client.post("/v1/chat/completions", json=CHAT).json()
        streamed = _sse(client.post("/v1/chat/completions", json={**CHAT, "stream": True}).text)
    assert_conforms(whole, "CreateChatCompletionResponse")
    choice = whole["choices"][0]
    message = choice["message"]
    assert (message["reasoning_content"], message["reasoning"], message["content"]) == (
        "Let me think",
        "Let me think",
        "Hello there",
    )
    tokens = choice["logprobs"]["content"]
    assert [t["token"] for t in tokens] == PIECES and choice["logprobs"]["refusal"] is None
    assert all(len(t["top_logprobs"]) == 2 and t["bytes"] == list(t["token"].encode()) for t in tokens)
    for chunk in streamed:
        assert_conforms(chunk, "CreateChatCompletionStreamResponse")
    deltas = [c["choices"][0]["delta"] for c in streamed]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think"
    assert "".join(d.get("reasoning", "") for d in deltas) == "Let me think"
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there"
    streamed_tokens = [
        t for c in streamed if c["choices"][0]["logprobs"] for t in c["choices"][0]["logprobs"]["content"]
    ]
    assert streamed_tokens == tokens


def test_openai_without_logprobs_sends_null_and_no_reasoning_fields_when_there_is_none() -> None:
    world = FakeWorld(load_seconds=0.0, features=STEERED)
    with fake_client(world) as client:
        reply = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "max_tokens": 3}).json()
    assert reply["choices"][0]["logprobs"] is None
    assert (
        "reasoning" not in reply["choices"][0]["message"] and "reasoning_content" not in reply["choices"][0]["message"]
    )


@pytest.mark.parametrize(
    ("fields", "variables", "control"),
    [
        ({"reasoning_effort": "none"}, {"enable_thinking": False}, ReasoningControl(enabled=False)),
        (
            {"reasoning_effort": "high", "max_reasoning_tokens": 7},
            {"enable_thinking": True, "reasoning_effort": "high"},
            ReasoningControl(enabled=True, effort="high", max_tokens=7),
        ),
        ({}, {}, ReasoningControl()),
    ],
)
def test_openai_reasoning_controls_reach_the_template(
    fields: dict[str, Any], variables: dict[str, Any], control: ReasoningControl
) -> None:
    world = _thinking_world()
    with fake_client(world) as client:
        assert client.post("/v1/chat/completions", json={**CHAT, **fields}).status_code == 200
    request = world.requests[-1]
    assert request.template_variables == variables and request.reasoning is not None
    assert (request.reasoning.enabled, request.reasoning.effort, request.reasoning.max_tokens) == (
        control.enabled,
        control.effort,
        control.max_tokens,
    )
    assert request.reasoning.start_marker == "<think>"


def test_reasoning_sent_back_reaches_the_template_in_both_dialects() -> None:
    world = _thinking_world()
    history = [*HELLO, {"role": "assistant", "content": "Hello", "reasoning_content": "greet"}, *HELLO]
    with fake_client(world) as client:
        client.post("/v1/chat/completions", json={**CHAT, "messages": history})
        history[1] = {"role": "assistant", "content": "Hello", "reasoning": "greet2"}
        client.post("/v1/chat/completions", json={**CHAT, "messages": history})
        history[1] = {"role": "assistant", "content": "Hello", "thinking": "greet3"}
        client.post("/api/chat", json={"model": "m", "messages": history, "stream": False})
    assert [r.messages[1].reasoning for r in world.requests if r.messages] == ["greet", "greet2", "greet3"]


def test_asking_a_model_without_a_reasoning_format_is_refused_and_off_passes() -> None:
    world = FakeWorld(load_seconds=0.0, features=STEERED)
    with fake_client(world) as client:
        think = client.post("/api/chat", json={"model": "m", "messages": HELLO, "think": True, "stream": False})
        effort = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "reasoning_effort": "low"})
        off = client.post("/api/chat", json={"model": "m", "messages": HELLO, "think": False, "stream": False})
        none = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "reasoning_effort": "none"})
    assert think.status_code == 400 and "think" in think.json()["error"]
    assert effort.status_code == 400 and effort.json()["error"]["code"] == "unsupported_capability"
    assert off.status_code == 200 and none.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"top_logprobs": 3}),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}),
        ("/api/chat", {"top_logprobs": 3}),
        ("/api/chat", {"logprobs": True, "top_logprobs": 21}),
        ("/api/chat", {"think": "very"}),
    ],
)
def test_bad_values_are_400s_naming_the_field(path: str, body: dict[str, Any]) -> None:
    with fake_client(_thinking_world()) as client:
        reply = client.post(path, json={"model": "m", "messages": HELLO, "stream": False, **body})
    assert reply.status_code == 400
    name = next(iter(body)) if "top_logprobs" not in body else "top_logprobs"
    assert name in reply.text


def test_ollama_chat_has_thinking_and_logprobs_streamed_alike() -> None:
    body = {"model": "m", "messages": HELLO, "think": True, "logprobs": True, "top_logprobs": 1}
    with fake_client(_thinking_world()) as client:
        whole = client.post("/api/chat", json={**body, "stream": False}).json()
        lines = _ndjson(client.post("/api/chat", json=body).text)
    assert whole["message"]["thinking"] == "Let me think" and whole["message"]["content"] == "Hello there"
    assert [e["token"] for e in whole["logprobs"]] == PIECES
    assert all(e["top_logprobs"][0]["token"] == e["token"] and e["bytes"] for e in whole["logprobs"])
    assert "".join(line["message"].get("thinking", "") for line in lines) == "Let me think"
    assert "".join(line["message"]["content"] for line in lines) == "Hello there"
    assert [e for line in lines for e in line.get("logprobs", [])] == whole["logprobs"]
    assert lines[-1]["done"] is True


def test_ollama_generate_has_thinking_and_logprobs() -> None:
    world = _thinking_world()
    body = {"model": "m", "prompt": "hi", "think": "high", "logprobs": True, "stream": False}
    with fake_client(world) as client:
        reply = client.post("/api/generate", json=body).json()
    assert (reply["thinking"], reply["response"]) == ("Let me think", "Hello there")
    assert len(reply["logprobs"]) == len(PIECES) and "top_logprobs" not in reply["logprobs"][0]
    assert world.requests[-1].template_variables == {"enable_thinking": True, "reasoning_effort": "high"}


def test_completions_have_the_legacy_logprobs_shape_with_echo_offsets() -> None:
    world = FakeWorld(load_seconds=0.0, features=STEERED)
    body = {"model": "m", "prompt": "Say", "max_tokens": 3, "logprobs": 2, "echo": True}
    with fake_client(world) as client:
        whole = client.post("/v1/completions", json=body).json()
        streamed = _sse(client.post("/v1/completions", json={**body, "stream": True}).text)
    assert_conforms(whole, "CreateCompletionResponse")
    logprobs = whole["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["t0 ", "t1 ", "t2 "] and logprobs["text_offset"] == [3, 6, 9]
    assert logprobs["token_logprobs"] == [-0.5, -0.6, -0.7]
    assert [list(d) for d in logprobs["top_logprobs"]] == [["t0 ", "alt0"], ["t1 ", "alt0"], ["t2 ", "alt0"]]
    relaxed = _streamed_completion_document()
    parts = [c["choices"][0]["logprobs"] for c in streamed if c["choices"] and c["choices"][0]["logprobs"]]
    for chunk in streamed:
        assert_conforms(chunk, "CreateCompletionResponse", relaxed)
    assert [t for p in parts for t in p["tokens"]] == logprobs["tokens"]
    assert [o for p in parts for o in p["text_offset"]] == logprobs["text_offset"]


def test_n_choices_carry_their_own_reasoning_and_logprobs() -> None:
    with fake_client(_thinking_world()) as client:
        reply = client.post("/v1/chat/completions", json={**CHAT, "n": 2}).json()
    assert_conforms(reply, "CreateChatCompletionResponse")
    for choice in reply["choices"]:
        assert choice["message"]["reasoning"] == "Let me think" and len(choice["logprobs"]["content"]) == len(PIECES)
