"""The Anthropic Messages API through the official `anthropic` SDK against a real server, on both backends."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import jsonschema
import pytest

from tests.support.server import ServerProcess
from tests.support.vision import RED

pytestmark = pytest.mark.integration

TEXT_MODELS = ["demo-gguf", "demo-mlx"]
TOOL_MODELS = ["demo-tools-gguf", "demo-tools-mlx"]
VISION_MODELS = ["demo-vision-gguf", "demo-vision-mlx"]
WEATHER = {
    "type": "object",
    # Bounded, so that random weights finish the call within max_tokens.
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}]
GREEDY = {"temperature": 0}
"""Sampling fields go in extra_body: the SDK (2.x) no longer declares temperature, top_p and top_k."""
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture()
def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_plain_message(client: anthropic.Anthropic, model: str) -> None:
    message = client.messages.create(
        model=model, max_tokens=8, system="Be brief.", messages=ASK, extra_body=GREEDY, metadata={"user_id": "u1"}
    )
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.content and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 8
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 0


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_stream_assembles_the_same_message(client: anthropic.Anthropic, model: str) -> None:
    plain = client.messages.create(model=model, max_tokens=8, messages=ASK, extra_body=GREEDY)
    with client.messages.stream(model=model, max_tokens=8, messages=ASK, extra_body=GREEDY) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and plain.content[0].type == "text"
    assert "".join(texts) == final.content[0].text == plain.content[0].text
    assert final.stop_reason == plain.stop_reason
    assert final.usage.output_tokens == plain.usage.output_tokens
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == plain.usage.input_tokens + (plain.usage.cache_read_input_tokens or 0)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_tool_round_trip(client: anthropic.Anthropic, model: str) -> None:
    first = client.messages.create(
        model=model,
        max_tokens=200,
        messages=ASK,
        tools=TOOLS,
        # One call: with parallel calls allowed, random weights may go on calling until max_tokens.
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert calls and calls[0].name == "get_weather"
    jsonschema.validate(calls[0].input, WEATHER)
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"}]},
    ]
    second = client.messages.create(
        model=model, max_tokens=8, messages=history, tools=TOOLS, tool_choice={"type": "none"}
    )
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert all(block.type != "tool_use" for block in second.content)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_streamed_tool_call_has_parsed_input(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(
        model=model,
        max_tokens=200,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    calls = [block for block in final.content if block.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(calls[0].input, WEATHER)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_count_tokens_matches_usage(client: anthropic.Anthropic, model: str) -> None:
    counted = client.messages.count_tokens(model=model, system="Be brief.", messages=ASK)
    message = client.messages.create(model=model, max_tokens=2, system="Be brief.", messages=ASK)
    # Anthropic counts tokens read from the (prefix) cache apart from input_tokens; together they are the prompt.
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_count_tokens_with_tools(client: anthropic.Anthropic, model: str) -> None:
    without = client.messages.count_tokens(model=model, messages=ASK)
    counted = client.messages.count_tokens(model=model, messages=ASK, tools=TOOLS)
    assert counted.input_tokens > without.input_tokens


@pytest.mark.parametrize("model", VISION_MODELS)
def test_image_block(client: anthropic.Anthropic, model: str) -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(RED).decode()},
    }
    content: list[Any] = [image, {"type": "text", "text": "describe"}]
    text_only = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "describe"}])
    counted = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": content}])
    assert counted.input_tokens > text_only.input_tokens
    message = client.messages.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": content}], extra_body=GREEDY
    )
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == counted.input_tokens


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=4, messages=ASK)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": json.loads(caught.value.response.text)["error"]["message"]},
    }


def test_bad_field_is_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="demo-gguf", max_tokens=4, messages=ASK, extra_body={"temperature": 3})
    assert "temperature" in str(caught.value)


def test_refused_field_names_itself(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="demo-gguf",
            max_tokens=4,
            messages=ASK,
            extra_body={"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]},
        )
    assert "'mcp_servers'" in str(caught.value)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="demo-gguf", max_tokens=4, messages=ASK, tools=[{"type": "web_search_20250305", "name": "web_search"}]
        )
    assert "'tools[0].type'" in str(caught.value)
