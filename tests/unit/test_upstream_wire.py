"""Translation to and from upstream APIs: neutral requests to OpenAI and Ollama JSON, their streams back to chunks,
and models.yaml's upstream entries."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from heylook_llm.config.registry import RegistryError, parse_registry
from heylook_llm.engine.upstream import ollama_wire, openai_wire
from heylook_llm.errors import CapabilityError, GenerationFailed
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GrammarSpec,
    ReasoningControl,
    SamplingParams,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

pytestmark = pytest.mark.unit

WEATHER = ToolSpec("get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}})


def _chat(**fields: Any) -> GenerationRequest:
    return GenerationRequest(
        model_id="remote", sampling=SamplingParams(max_tokens=7, seed=5), messages=[ChatMessage("user", "hi")], **fields
    )


def _sse(events: list[dict[str, Any]]) -> list[str]:
    return [f"data: {orjson.dumps(e).decode()}" for e in events] + ["data: [DONE]"]


def test_openai_body_carries_tools_choice_schema_and_logprobs() -> None:
    request = _chat(
        tools=[WEATHER],
        tool_choice=ToolChoice("required"),
        parallel_tool_calls=False,
        response_format={"type": "object"},
        logprobs=True,
        top_logprobs=3,
    )
    request.messages = [
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", tool_calls=[ToolCall("c1", "get_weather", '{"city": "Oslo"}')]),
        ChatMessage("tool", "cold", tool_call_id="c1"),
    ]
    path, body = openai_wire.request_body(request, "upstream-name")
    assert path == "/chat/completions" and body["model"] == "upstream-name" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"][0]["function"]["name"] == "get_weather" and body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["max_tokens"] == 7 and body["seed"] == 5
    assert body["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert body["messages"][2] == {"role": "tool", "content": "cold", "tool_call_id": "c1"}


def test_openai_body_refuses_what_the_api_has_no_field_for() -> None:
    with pytest.raises(CapabilityError) as grammar:
        openai_wire.request_body(_chat(grammar=GrammarSpec("regex", "a+", param="regex")), "m")
    assert grammar.value.param == "regex"
    with pytest.raises(CapabilityError) as budget:
        openai_wire.request_body(_chat(reasoning=ReasoningControl(enabled=True, max_tokens=10)), "m")
    assert budget.value.param == "max_reasoning_tokens"


def test_openai_stream_decodes_text_reasoning_tool_calls_and_usage() -> None:
    decoder = openai_wire.StreamDecoder()
    lines = _sse(
        [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]},
            {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "c1",
                                    "type": "function",
                                    "function": {"name": "f", "arguments": "{"},
                                }
                            ]
                        },
                    }
                ]
            },
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}},
            },
        ]
    )
    chunks = [c for c in (decoder.feed(line) for line in lines) if c is not None]
    assert decoder.done
    assert [c.reasoning for c in chunks] == ["think", "", ""]
    assert [c.text for c in chunks] == ["", "Hel", ""]
    assert chunks[2].tool_calls[0].name == "f" and chunks[2].tool_calls[0].arguments == "{"
    assert decoder.finish_reason() == FinishReason.TOOL_CALLS
    assert (decoder.stats.prompt_tokens, decoder.stats.completion_tokens, decoder.stats.cached_prompt_tokens) == (
        9,
        4,
        2,
    )


def test_openai_stream_without_usage_counts_its_events() -> None:
    decoder = openai_wire.StreamDecoder()
    for line in _sse(
        [
            {"choices": [{"index": 0, "delta": {"content": "a"}}]},
            {"choices": [{"index": 0, "delta": {"content": "b"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        ]
    ):
        decoder.feed(line)
    assert decoder.finish_reason() == FinishReason.LENGTH and decoder.stats.completion_tokens == 2


def test_openai_stream_logprobs_keep_token_bytes() -> None:
    decoder = openai_wire.StreamDecoder()
    event = {
        "choices": [
            {
                "index": 0,
                "delta": {"content": "é"},
                "logprobs": {
                    "content": [
                        {
                            "token": "é",
                            "logprob": -0.5,
                            "bytes": [195, 169],
                            "top_logprobs": [{"token": "e", "logprob": -1.0, "bytes": [101]}],
                        }
                    ]
                },
            }
        ]
    }
    chunk = decoder.feed(f"data: {orjson.dumps(event).decode()}")
    assert isinstance(chunk, GenerationChunk) and chunk.logprobs[0].piece == "é".encode()
    assert chunk.logprobs[0].top[0].text == "e" and chunk.logprobs[0].logprob == -0.5


def test_an_error_event_mid_stream_is_a_generation_failure() -> None:
    with pytest.raises(GenerationFailed, match="out of memory"):
        openai_wire.StreamDecoder().feed('data: {"error": {"message": "out of memory"}}')
    with pytest.raises(GenerationFailed, match="not JSON"):
        openai_wire.StreamDecoder().feed("data: {oops")


def test_ollama_body_and_refusals() -> None:
    path, body = ollama_wire.request_body(_chat(tools=[WEATHER], response_format="json"), "llama3.2:3b")
    assert path == "/api/chat" and body["model"] == "llama3.2:3b" and body["format"] == "json"
    assert body["options"]["num_predict"] == 7 and body["options"]["seed"] == 5
    assert body["tools"][0]["function"]["name"] == "get_weather"
    for request, param in [
        (_chat(tools=[WEATHER], tool_choice=ToolChoice("required")), "tool_choice"),
        (_chat(logprobs=True), "logprobs"),
        (_chat(grammar=GrammarSpec("grammar", "start: 'a'")), "grammar"),
    ]:
        with pytest.raises(CapabilityError) as refused:
            ollama_wire.request_body(request, "m")
        assert refused.value.param == param
    prompt = GenerationRequest(model_id="m", sampling=SamplingParams(), prompt="once")
    assert ollama_wire.request_body(prompt, "m")[0] == "/api/generate"


def test_ollama_lines_decode_calls_thinking_and_counts() -> None:
    decoder = ollama_wire.LineDecoder()
    events: list[dict[str, Any]] = [
        {"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
            },
            "done": False,
        },
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": 3,
        },
    ]
    lines = [orjson.dumps(e).decode() for e in events]
    chunks = [c for c in (decoder.feed(line) for line in lines) if c is not None]
    assert chunks[0].reasoning == "hmm"
    assert chunks[1].tool_calls[0].name == "f" and orjson.loads(chunks[1].tool_calls[0].arguments) == {"x": 1}
    assert decoder.done and decoder.finish_reason() == FinishReason.TOOL_CALLS
    assert (decoder.stats.prompt_tokens, decoder.stats.completion_tokens) == (5, 3)
    with pytest.raises(GenerationFailed, match="model crashed"):
        ollama_wire.LineDecoder().feed('{"error": "model crashed"}')


def _registry(config: dict[str, Any], provider: str = "openai_compatible") -> Any:
    return parse_registry({"models": [{"id": "r", "provider": provider, "config": config}]}, None)


def test_models_yaml_upstream_entries_are_checked() -> None:
    entry = _registry(
        {"base_url": "http://gpu-box:8000/v1/", "model": "Qwen", "replicas": [{"base_url": "http://gpu-2:8000/v1"}]}
    ).models[0]
    assert entry.upstream is not None and entry.upstream.base_url == "http://gpu-box:8000/v1"
    for config, problem in [
        ({"model": "m"}, "base_url"),
        ({"base_url": "gpu-box:8000", "model": "m"}, "not an http"),
        ({"base_url": "http://h", "model": "m", "api_key": "a", "api_key_env": "B"}, "either api_key or api_key_env"),
        ({"base_url": "http://h", "model": "m", "features": ["telepathy"]}, "unknown feature 'telepathy'"),
        ({"base_url": "http://h", "model": "m", "tool_format": "hermes"}, "cannot be set for an upstream"),
        ({"base_url": "http://h", "model": "m", "replicas": [{"model": "x"}]}, "replicas.0.base_url"),
        ({"base_url": "http://h", "model": "m", "n_ctx": 4}, "unknown key"),
    ]:
        with pytest.raises(RegistryError) as error:
            _registry(config)
        assert problem in "\n".join(error.value.problems), (config, error.value.problems)
