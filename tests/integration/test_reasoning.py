"""Reasoning over HTTP on both backends, with the openai and ollama clients: the demo think models' template opens
`<think>`, so even random weights reason; a budget makes the server close the reasoning so that the model answers;
streamed and whole answers agree; turning reasoning off, tools and output constraints work with it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from ollama import Client
from openai import OpenAI

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

THINK_MODELS = ["demo-think-gguf", "demo-think-mlx"]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
BUDGET = 6
MAX_TOKENS = 32


@pytest.fixture(params=THINK_MODELS)
def model(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture()
def ollama(server: ServerProcess) -> Client:
    return Client(host=server.base_url, timeout=60)


def _extra(message: Any, name: str) -> Any:
    return (message.model_extra or {}).get(name)


def _budget_body(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": ASK,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "extra_body": {"max_reasoning_tokens": BUDGET},
        **extra,
    }


def test_a_budget_closes_the_reasoning_and_the_model_answers(client: OpenAI, model: str) -> None:
    reply = client.chat.completions.create(**_budget_body(model))
    message = reply.choices[0].message
    reasoning = _extra(message, "reasoning_content")
    assert reasoning and reasoning == _extra(message, "reasoning")
    assert message.content and "</think>" not in message.content and "</think>" not in reasoning
    assert reply.usage is not None and reply.usage.completion_tokens == MAX_TOKENS


def test_streamed_reasoning_and_answer_match_the_whole_reply(client: OpenAI, model: str) -> None:
    whole = client.chat.completions.create(**_budget_body(model)).choices[0].message
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(**_budget_body(model), stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += _extra(delta, "reasoning_content") or ""
            content += delta.content or ""
    assert (reasoning, content) == (_extra(whole, "reasoning_content"), whole.content)


def test_the_same_answer_from_both_backends(client: OpenAI) -> None:
    """The same weights and a greedy budgeted run: the split lands in the same place on llama.cpp and MLX."""
    replies = [client.chat.completions.create(**_budget_body(m)).choices[0].message for m in THINK_MODELS]
    assert _extra(replies[0], "reasoning") == _extra(replies[1], "reasoning")


def test_reasoning_effort_none_turns_the_template_switch_off(client: OpenAI, model: str) -> None:
    body = {"model": model, "messages": ASK, "max_tokens": 8, "temperature": 0}
    off = client.chat.completions.create(**body, reasoning_effort="none")  # type: ignore[call-overload]
    assert _extra(off.choices[0].message, "reasoning") is None and off.choices[0].message.content
    on = client.chat.completions.create(**body, reasoning_effort="high")  # type: ignore[call-overload]
    assert _extra(on.choices[0].message, "reasoning") and not on.choices[0].message.content
    # The level reached the template: it writes "Reasoning effort: high" in a system line.
    assert on.usage is not None and off.usage is not None and on.usage.prompt_tokens > off.usage.prompt_tokens


def test_ollama_think_fills_message_thinking(ollama: Client, model: str) -> None:
    options = {"num_predict": 12, "temperature": 0}
    thinking = ollama.chat(model=model, messages=ASK, think=True, options=options)
    assert thinking.message.thinking and not thinking.message.content
    plain = ollama.chat(model=model, messages=ASK, think=False, options=options)
    assert not plain.message.thinking and plain.message.content
    streamed = list(ollama.chat(model=model, messages=ASK, think=True, options=options, stream=True))
    assert "".join(part.message.thinking or "" for part in streamed) == thinking.message.thinking
    generated = ollama.generate(model=model, prompt="Why?", think="low", options=options)
    assert generated.thinking and not generated.response


def test_ollama_budget_through_the_extension_field(server: ServerProcess, model: str) -> None:
    body = {
        "model": model,
        "messages": ASK,
        "stream": False,
        "max_reasoning_tokens": BUDGET,
        "options": {"num_predict": MAX_TOKENS, "temperature": 0},
    }
    reply = httpx.post(f"{server.base_url}/api/chat", json=body, timeout=60).json()
    assert reply["message"]["thinking"] and reply["message"]["content"]


def test_a_model_without_reasoning_refuses_to_think(client: OpenAI, ollama: Client) -> None:
    with pytest.raises(Exception, match="reasoning"):
        client.chat.completions.create(model="demo-gguf", messages=ASK, reasoning_effort="high")  # type: ignore[call-overload]
    plain = client.chat.completions.create(model="demo-gguf", messages=ASK, max_tokens=4, reasoning_effort="none")  # type: ignore[call-overload]
    assert plain.choices[0].message.content is not None
    with pytest.raises(Exception, match="think"):
        ollama.chat(model="demo-gguf", messages=ASK, think=True)


WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"],
    "additionalProperties": False,
}


def test_a_required_tool_call_comes_after_the_reasoning(client: OpenAI, model: str) -> None:
    """The grammar waits for the answer: the reasoning is free text, the call after it is valid."""
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    reply = client.chat.completions.create(
        **_budget_body(model, max_tokens=120), tools=[tool], tool_choice="required", parallel_tool_calls=False
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and _extra(choice.message, "reasoning")
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER)


def test_a_json_answer_comes_after_the_reasoning(client: OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        **_budget_body(model, max_tokens=120),
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}},
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "stop" and _extra(message, "reasoning")
    jsonschema.validate(json.loads(message.content or ""), WEATHER)


def test_earlier_reasoning_is_dropped_by_the_template(client: OpenAI, model: str) -> None:
    """The demo template, like DeepSeek-R1's and Qwen3's, drops the reasoning of turns before the last question:
    sending it back changes nothing in the prompt."""
    turn = {"role": "assistant", "content": "Sunny."}
    body = {"model": model, "max_tokens": 1, "temperature": 0}
    bare = client.chat.completions.create(messages=[*ASK, turn, *ASK], **body)
    with_reasoning = {**turn, "reasoning_content": "Long thoughts about Paris and the weather there."}
    sent_back = client.chat.completions.create(messages=[*ASK, with_reasoning, *ASK], **body)
    assert bare.usage is not None and sent_back.usage is not None
    assert sent_back.usage.prompt_tokens == bare.usage.prompt_tokens
    # After the last question (between tool calls) the template keeps it.
    kept = client.chat.completions.create(messages=[*ASK, with_reasoning], **body)
    plain = client.chat.completions.create(messages=[*ASK, turn], **body)
    assert kept.usage is not None and plain.usage is not None and kept.usage.prompt_tokens > plain.usage.prompt_tokens
