"""Fail-closed request fields: refused when they ask for something not implemented, accepted when harmless."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from heylook_llm.api.fields import UnknownFieldLog, check_fields, field_values
from heylook_llm.api.ollama import refusals as ollama_refusals
from heylook_llm.api.ollama.schemas import CreateRequest, Options
from heylook_llm.api.openai import refusals
from heylook_llm.api.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from heylook_llm.errors import UnsupportedParameter

pytestmark = pytest.mark.unit

HELLO = [{"role": "user", "content": "hi"}]


def _chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": HELLO, **fields})


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"verbosity": "low"}, "verbosity"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"store": True}, "store"),
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
        ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}, "messages[0].content[0].type"),
    ],
)
def test_openai_chat_refuses_what_it_does_not_implement(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        refusals.check_chat(_chat(**fields))
    assert err.value.param == param and f"'{param}'" in err.value.message


def test_openai_chat_accepts_defaults_and_fields_without_effect() -> None:
    harmless = {
        "tool_choice": "none",
        "function_call": "none",
        "logprobs": False,
        "top_logprobs": 0,
        "modalities": ["text"],
        "reasoning_effort": "none",
        "verbosity": "medium",
        "service_tier": "auto",
        "store": False,
        "parallel_tool_calls": True,
        "user": "u1",
        "metadata": {"k": "v"},
        "prompt_cache_key": "abc",
        "stream_options": {"include_usage": True},
    }
    assert refusals.check_chat(_chat(**harmless)) == []


def test_openai_unknown_fields_are_returned_for_the_log() -> None:
    assert refusals.check_chat(_chat(my_extension=1, messages=[{**HELLO[0], "x_note": 2}])) == [
        "my_extension",
        "messages[0].x_note",
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"best_of": 3}, "best_of")],
)
def test_openai_completion_refusals(fields: dict[str, Any], param: str) -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})
    with pytest.raises(UnsupportedParameter) as err:
        refusals.check_completion(body)
    assert err.value.param == param


def test_openai_completion_accepts_implemented_fields() -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": "x", "best_of": 1, "echo": True, "suffix": "y"})
    assert refusals.check_completion(body) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", ["a"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_embedding_inputs_take_texts_and_token_ids(value: Any, expected: list[Any]) -> None:
    body = EmbeddingRequest.model_validate({"model": "m", "input": value, "user": "u"})
    assert body.inputs() == expected and refusals.check_embedding(body) == []


def test_ollama_create_refuses_renderer_and_parser() -> None:
    for field in ("renderer", "parser"):
        body = CreateRequest.model_validate({"model": "x", "from": "y", field: "qwen3"})
        with pytest.raises(UnsupportedParameter) as err:
            ollama_refusals.check_create(body, Options())
        assert err.value.param == field
    body = CreateRequest.model_validate({"model": "x", "from": "y", "license": "MIT"})
    assert ollama_refusals.check_create(body, Options.model_validate({"num_gpu": 1, "x_opt": 2})) == [
        "parameters.x_opt"
    ]
    with pytest.raises(UnsupportedParameter) as err:
        ollama_refusals.check_create(body, Options.model_validate({"mirostat": 1}))
    assert err.value.param == "parameters.mirostat"


def test_field_values_include_declared_and_extra_fields_but_not_defaults() -> None:
    body = _chat(temperature=0.5, extension=True)
    values = field_values(body)
    assert values["temperature"] == 0.5 and values["extension"] is True and "top_p" not in values


def test_check_fields_prefixes_names() -> None:
    assert check_fields({"a": 1, "b": 2}, (), ["a"], prefix="options.") == ["options.b"]


def test_unknown_fields_are_logged_once_per_name(caplog: pytest.LogCaptureFixture) -> None:
    notes = UnknownFieldLog()
    with caplog.at_level(logging.DEBUG, logger="heylook_llm.api.fields"):
        notes.note("OpenAI", ["x", "y"])
        notes.note("OpenAI", ["x"])
        notes.note("Ollama", ["x"])
    assert [r.getMessage().split("'")[1] for r in caplog.records] == ["x", "y", "x"]


def test_openai_nulls_mean_not_given() -> None:
    body = _chat(stream=None, n=None, temperature=None, stream_options=None)
    assert body.stream is False and body.n == 1 and refusals.check_chat(body) == []
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "x", "echo": None, "n": None})
    assert completion.echo is False and completion.n == 1


def test_token_id_prompts_are_refused_by_name() -> None:
    for prompt in ([1, 2], [[1, 2]]):
        body = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
        with pytest.raises(UnsupportedParameter) as err:
            refusals.check_completion(body)
        assert err.value.param == "prompt"
