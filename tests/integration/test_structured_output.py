"""Structured output is valid by construction on both backends: every finished output parses with strict
json.loads and validates against the schema, whatever the seed; grammars and regexes constrain output; what the
engine cannot enforce is a 400; no sampling value can take the process down."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import pytest
from ollama import Client
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "give me json"}]

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "additionalProperties": False,
            },
            "ok": {"type": "boolean"},
        },
        "required": ["person", "ok"],
        "additionalProperties": False,
    },
    "arrays_enums": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 3},
            "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 10}, "maxItems": 4},
        },
        "required": ["tags", "scores"],
        "additionalProperties": False,
    },
    "any_of_pattern": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
            "value": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 9}, {"type": "null"}]},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["id", "value", "when"],
        "additionalProperties": False,
    },
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
        "additionalProperties": False,
    },
}

CHAT_MODELS = ["demo-gguf", "demo-mlx"]


def _check(text: str, schema: dict[str, Any]) -> None:
    # Strict JSON: no NaN, no raw control characters in strings (json.loads rejects them by default).
    value = json.loads(text)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_finished_output_is_valid(client: OpenAI, model: str, name: str) -> None:
    schema = SCHEMAS[name]
    finished = 0
    for seed in range(6):
        reply = client.chat.completions.create(
            model=model,
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=300,
            temperature=1.0,
            seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
        )
        choice = reply.choices[0]
        if choice.finish_reason == "length":
            continue
        _check(choice.message.content or "", schema)
        finished += 1
    assert finished >= 4, f"only {finished} of 6 outputs finished within max_tokens"


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_ollama_format_json_and_schema(server: ServerProcess, model: str) -> None:
    ollama = Client(host=server.base_url, timeout=60)
    schema = SCHEMAS["nested"]
    for seed in range(3):
        reply = ollama.chat(
            model=model, messages=HELLO, format=schema, options={"seed": seed, "temperature": 1, "num_predict": 300}
        )
        if reply.done_reason == "stop":
            _check(reply.message.content or "", schema)
        any_object = ollama.generate(
            model=model, prompt="json", format="json", options={"seed": seed, "num_predict": 300}
        )
        if any_object.done_reason == "stop":
            assert isinstance(json.loads(any_object.response), dict)


class Answer(BaseModel):
    # Bounded so that random weights finish within max_tokens; the SDK sends the schema with strict: true.
    city: str = Field(max_length=12)
    population: int = Field(ge=0, le=10**9)
    capital: bool


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_the_sdk_parse_helper_gets_a_model_instance(client: OpenAI, model: str) -> None:
    parsed = client.beta.chat.completions.parse(
        model=model,
        messages=HELLO,
        response_format=Answer,
        max_tokens=200,
        temperature=0.7,
        seed=3,  # type: ignore[arg-type]
    )
    message = parsed.choices[0].message
    if parsed.choices[0].finish_reason == "stop":
        assert isinstance(message.parsed, Answer)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_grammar_and_regex_constrain_output(server: ServerProcess, model: str) -> None:
    url = f"{server.base_url}/v1/chat/completions"
    for seed in range(3):
        body = {"model": model, "messages": HELLO, "seed": seed, "temperature": 1, "max_tokens": 20}
        regex = httpx.post(url, json={**body, "regex": "[0-9]{3}-[a-z]{2}"}, timeout=60).json()
        assert re.fullmatch("[0-9]{3}-[a-z]{2}", regex["choices"][0]["message"]["content"])
        gbnf = httpx.post(url, json={**body, "grammar": 'root ::= "yes" | "no" | "maybe"'}, timeout=60).json()
        assert gbnf["choices"][0]["message"]["content"] in {"yes", "no", "maybe"}
        lark = httpx.post(url, json={**body, "grammar": 'start: "left" | "right"'}, timeout=60).json()
        assert lark["choices"][0]["message"]["content"] in {"left", "right"}
    ollama_regex = httpx.post(
        f"{server.base_url}/api/generate",
        json={"model": model, "prompt": "x", "regex": "(true|false)", "stream": False},
        timeout=60,
    ).json()
    assert ollama_regex["response"] in {"true", "false"}


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object", "unevaluatedProperties": False}},
                }
            },
            "response_format",
            "unevaluatedProperties",
        ),
        ({"regex": "(unclosed"}, "regex", ""),
        ({"grammar": "root ::= undefined_rule"}, "grammar", ""),
        ({"regex": "a", "grammar": 'root ::= "a"'}, "regex", "one output constraint"),
    ],
)
def test_what_cannot_be_enforced_is_a_400(server: ServerProcess, extra: dict[str, Any], param: str, words: str) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "demo-gguf", "messages": HELLO, "max_tokens": 5, **extra},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]


def test_no_sampling_value_takes_the_server_down(server: ServerProcess) -> None:
    cases = [
        (
            "/v1/chat/completions",
            {
                "model": "demo-gguf",
                "messages": HELLO,
                "response_format": {"type": "json_object"},
                "repeat_penalty": 5e-324,
            },
        ),
        (
            "/api/chat",
            {
                "model": "demo-gguf",
                "messages": HELLO,
                "format": "json",
                "options": {"repeat_penalty": 1e-300},
                "stream": False,
            },
        ),
        ("/api/chat", {"model": "demo-gguf", "messages": HELLO, "options": {"repeat_penalty": 0}, "stream": False}),
        ("/v1/chat/completions", {"model": "demo-mlx", "messages": HELLO, "repeat_penalty": 1e-9}),
    ]
    for path, body in cases:
        response = httpx.post(f"{server.base_url}{path}", json=body, timeout=60)
        assert response.status_code == 400, (body, response.text)
        assert "repeat_penalty" in response.text
    # Not valid JSON for the official clients, but Python's parser reads them: still refused by name.
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = '{"model": "demo-gguf", "messages": [{"role": "user", "content": "x"}], "temperature": ' + literal + "}"
        response = httpx.post(
            f"{server.base_url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    ok = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "demo-gguf", "messages": HELLO, "response_format": {"type": "json_object"}, "max_tokens": 50},
        timeout=60,
    )
    assert ok.status_code == 200
