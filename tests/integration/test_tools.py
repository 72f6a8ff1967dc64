"""Tool calling over HTTP on both backends: forced choices always yield valid calls (even from random weights),
`auto` and `none` leave text as text, calls stream as OpenAI and Ollama stream them, and history with calls and
tool results reaches the model's template."""

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

TOOL_MODELS = ["demo-tools-gguf", "demo-tools-mlx"]
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    # Bounded: greedy decoding of random weights would repeat digits of an unbounded integer to max_tokens.
    "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": -999, "maximum": 999},
    },
    "required": ["a", "b"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


def _valid(name: str, arguments: str) -> None:
    assert name in SCHEMAS
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("model", [*TOOL_MODELS, "demo-gguf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_required_always_yields_one_valid_call(client: OpenAI, model: str, seed: int) -> None:
    # demo-gguf's template has no tool support: the generic format describes the tools in a system message.
    reply = client.chat.completions.create(
        model=model,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=200,
        temperature=1.0,
        seed=seed,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and choice.message.content is None
    assert calls[0].id.startswith("call_") and calls[0].type == "function"
    _valid(calls[0].function.name, calls[0].function.arguments)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_a_named_function_is_the_one_called(client: OpenAI, model: str) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model=model,
            messages=ASK,
            tools=TOOLS,
            max_tokens=200,
            seed=seed,
            temperature=1.0,
            tool_choice={"type": "function", "function": {"name": "add"}},
        )
        calls = reply.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["add"]
        _valid("add", calls[0].function.arguments)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_streamed_calls_match_the_whole_answer(client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 200,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**body).choices[0].message.tool_calls or []
    first_pieces: list[Any] = []
    arguments: dict[int, str] = {}
    finish = None
    for chunk in client.chat.completions.create(**body, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        assert not delta.content, "tool-call text leaked into content"
        for piece in delta.tool_calls or []:
            if piece.id is not None:
                first_pieces.append(piece)
            arguments[piece.index] = arguments.get(piece.index, "") + (piece.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(p.function.name, p.index) for p in first_pieces] == [(c.function.name, i) for i, c in enumerate(whole)]
    assert [arguments[i] for i in sorted(arguments)] == [c.function.arguments for c in whole]


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_auto_and_none_leave_text_as_text(client: OpenAI, model: str) -> None:
    for mode in ("auto", "none"):
        reply = client.chat.completions.create(
            model=model,
            messages=ASK,
            tools=TOOLS,
            tool_choice=mode,
            max_tokens=30,
            seed=4,  # type: ignore[arg-type]
        )
        message = reply.choices[0].message
        assert not message.tool_calls and message.content is not None
        assert "<tool_call>" not in message.content


def test_parallel_calls_are_indexed_in_order(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model="demo-tools-gguf",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=400,
        seed=7,
        temperature=1.0,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert calls, reply
    for call in calls:
        _valid(call.function.name, call.function.arguments)
    assert len({c.id for c in calls}) == len(calls)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_a_full_round_trip_reaches_the_template(client: OpenAI, model: str) -> None:
    first = client.chat.completions.create(
        model=model, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=200
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(
        model=model, messages=history, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    shorter = client.chat.completions.create(
        model=model,
        messages=[*history[:2], {**history[2], "content": "x"}],
        tools=TOOLS,
        tool_choice="none",
        max_tokens=8,
    )
    assert answer.choices[0].message.content is not None and answer.usage and shorter.usage
    # The tool result's text is in the prompt: a longer result makes a longer prompt.
    assert answer.usage.prompt_tokens > shorter.usage.prompt_tokens


def test_legacy_functions_map_onto_tools(server: ServerProcess) -> None:
    body = {
        "model": "demo-tools-gguf",
        "messages": ASK,
        "max_tokens": 200,
        "functions": [{"name": "add", "parameters": ADD}],
        "function_call": {"name": "add"},
    }
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).json()
    call = reply["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "add"
    _valid("add", call["function"]["arguments"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required", "tools": None}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_impossible_tool_requests_are_400(server: ServerProcess, extra: dict[str, Any], param: str) -> None:
    body = {"model": "demo-tools-gguf", "messages": ASK, "tools": TOOLS, **extra}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def get_weather(city: str, unit: str) -> str:
    """Weather in a city.

    Args:
        city: The city.
        unit: c or f.
    """
    return f"21 {unit} in {city}"


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_ollama_calls_have_object_arguments_streamed_or_not(server: ServerProcess, model: str) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "get_weather",
        "options": {"num_predict": 200, "temperature": 0},
    }
    whole = httpx.post(f"{server.base_url}/api/chat", json={**body, "stream": False}, timeout=60).json()
    calls = whole["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    jsonschema.validate(calls[0]["function"]["arguments"], WEATHER)
    assert whole["message"]["content"] == "" and whole["done_reason"] == "stop"
    lines = httpx.post(f"{server.base_url}/api/chat", json=body, timeout=60).text.splitlines()
    streamed = [c for line in lines for c in json.loads(line).get("message", {}).get("tool_calls", [])]
    assert streamed == calls


def test_the_ollama_client_sends_python_functions_as_tools(server: ServerProcess) -> None:
    ollama = Client(host=server.base_url, timeout=60)
    plain = ollama.chat(model="demo-tools-gguf", messages=ASK, options={"num_predict": 2})
    with_tools = ollama.chat(model="demo-tools-gguf", messages=ASK, tools=[get_weather], options={"num_predict": 2})
    # The template lists the tools in a system turn: the prompt is longer with them.
    assert (with_tools.prompt_eval_count or 0) > (plain.prompt_eval_count or 0)
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}],
        },
        {"role": "tool", "content": "21 c in Paris", "tool_name": "get_weather"},
    ]
    answer = ollama.chat(model="demo-tools-gguf", messages=history, tools=[get_weather], options={"num_predict": 4})
    assert answer.done and (answer.prompt_eval_count or 0) > (with_tools.prompt_eval_count or 0)
