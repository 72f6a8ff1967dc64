"""The Anthropic Messages dialect in-process, in front of the engine façade with fake backends."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import orjson
from fastapi.testclient import TestClient

from heylook_llm.api.anthropic.convert import TOOL_ERROR_PREFIX
from heylook_llm.backends.base import Backend
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import GenerationFailed
from heylook_llm.types import ChatMessage, Feature, FinishReason, GenerationChunk, GenerationRequest, ToolChoice
from tests.support.fake_backend import FakeBackend, FakeWorld
from tests.support.inprocess import fake_client


class CountingBackend(FakeBackend):
    """Counts a prompt as one token per message plus one per tool, and fails mid-stream when told to."""

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(request.messages or []) + len(request.tools)

    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        if request.sampling.stop == ("fail",):
            yield GenerationChunk("t0 ", token_count=1)
            raise GenerationFailed("the model broke")
        yield from super().generate_tokens(request)


TOOL_FEATURES = frozenset({Feature.CHAT, Feature.TOOLS})


def _tools_world() -> FakeWorld:
    return FakeWorld(load_seconds=0.0, features=TOOL_FEATURES)


class CountingWorld(FakeWorld):
    def factory(self, entry: ModelEntry, settings: ServerSettings) -> Backend:
        return CountingBackend(entry, settings, self)


def _post(client: TestClient, body: dict[str, Any], path: str = "/v1/messages") -> Any:
    return client.post(path, json=body, headers={"anthropic-version": "2023-06-01", "x-api-key": "x"})


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}], **extra}


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def test_message_has_anthropic_shape() -> None:
    with fake_client() as client:
        reply = _post(client, _body())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == "m"
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "t0 t1 t2 "}]
    assert body["stop_reason"] == "max_tokens" and body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": 1,
        "output_tokens": 3,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_end_of_turn_is_end_turn() -> None:
    with fake_client(FakeWorld(load_seconds=0.0, pieces=["a", "b"])) as client:
        body = _post(client, _body(max_tokens=10)).json()
    assert body["stop_reason"] == "end_turn"
    assert body["content"] == [{"type": "text", "text": "ab"}]


def test_stream_sends_named_events_in_order() -> None:
    with fake_client() as client:
        reply = _post(client, _body(stream=True))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = _events(reply.content)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "t0 t1 t2 "
    delta = dict(events)["message_delta"]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 3


def test_history_converts_to_neutral_messages() -> None:
    world = _tools_world()
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "look it up", "signature": "s"},
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "rain"}]},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom", "is_error": True},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    tools = [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}]
    system = [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}]
    with fake_client(world) as client:
        reply = _post(client, _body(system=system, messages=messages, tools=tools, metadata={"user_id": "u"}))
    assert reply.status_code == 200, reply.text
    sent = world.requests[-1]
    assert sent.origin == "anthropic"
    assert sent.messages is not None
    roles = [m.role for m in sent.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assert sent.messages[0].content.startswith("be brief\nbe kind")  # the generic tool format adds the tools
    assistant = sent.messages[2]
    assert assistant.content == "checking" and assistant.reasoning == "look it up"
    assert [(c.id, c.name, orjson.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("toolu_1", "weather", {"city": "Oslo"})
    ]
    first, second = sent.messages[3], sent.messages[4]
    assert (first.content, first.tool_call_id, first.tool_name) == ("rain", "toolu_1", "weather")
    assert second.content == TOOL_ERROR_PREFIX + "boom"
    assert sent.messages[5] == ChatMessage("user", "thanks")
    assert [t.name for t in sent.tools] == ["weather"]


def _sent_choice(choice: dict[str, Any]) -> tuple[ToolChoice | None, bool]:
    world = _tools_world()
    tools = [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    with fake_client(world) as client:
        reply = _post(client, _body(tools=tools, tool_choice=choice))
    assert reply.status_code == 200, reply.text
    return world.requests[-1].tool_choice, world.requests[-1].parallel_tool_calls


def test_tool_choice_maps_to_neutral_choice() -> None:
    assert _sent_choice({"type": "auto"}) == (None, True)
    assert _sent_choice({"type": "any", "disable_parallel_tool_use": True}) == (ToolChoice("required"), False)
    assert _sent_choice({"type": "tool", "name": "f"}) == (ToolChoice("function", "f"), True)
    assert _sent_choice({"type": "none"}) == (ToolChoice("none"), True)


def test_tool_choice_naming_an_unknown_tool_is_400() -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    with fake_client(_tools_world()) as client:
        reply = _post(client, _body(tools=tools, tool_choice={"type": "tool", "name": "g"}))
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert "tool_choice.name" in reply.json()["error"]["message"]


def test_validation_error_has_anthropic_shape() -> None:
    body = _body()
    del body["max_tokens"]
    with fake_client() as client:
        reply = _post(client, body)
    assert reply.status_code == 400
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]


def test_unknown_model_is_not_found_error() -> None:
    with fake_client() as client:
        reply = _post(client, _body(model="nope"))
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "not_found_error"


def test_unserved_path_under_messages_takes_anthropic_shape() -> None:
    with fake_client() as client:
        reply = _post(client, {}, "/v1/messages/batches")
        openai = client.post("/v1/nothing-here", json={})
    assert reply.status_code == 404
    assert reply.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": reply.json()["error"]["message"]},
    }
    assert "error" in openai.json() and "type" in openai.json()["error"] and openai.json().get("type") is None


def test_refused_fields_name_themselves() -> None:
    cases = [
        (_body(mcp_servers=[{"type": "url", "url": "http://x", "name": "x"}]), "mcp_servers"),
        (_body(container="c1"), "container"),
        (_body(context_management={"edits": []}), "context_management"),
        (_body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
        (
            _body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
            "messages[0].content[0].type",
        ),
        (
            _body(
                messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]
            ),
            "messages[0].content[0].source.type",
        ),
    ]
    with fake_client() as client:
        for body, name in cases:
            reply = _post(client, body)
            assert reply.status_code == 400, (name, reply.text)
            error = reply.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert f"'{name}'" in error["message"], error["message"]


def test_no_effect_fields_pass() -> None:
    with fake_client() as client:
        reply = _post(
            client, _body(metadata={"user_id": "u"}, service_tier="auto", cache_control={"type": "ephemeral"})
        )
    assert reply.status_code == 200, reply.text


def test_sampling_fields_reach_the_request() -> None:
    world = FakeWorld(load_seconds=0.0)
    with fake_client(world) as client:
        _post(client, _body(temperature=0.5, top_p=0.9, top_k=7, stop_sequences=["x"]))
    sampling = world.requests[-1].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.stop) == (0.5, 0.9, 7, ("x",))
    assert sampling.max_tokens == 3


def test_thinking_on_a_model_without_reasoning_is_400() -> None:
    with fake_client() as client:
        reply = _post(client, _body(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024}))
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_images_need_a_vision_model() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with fake_client() as client:
        reply = _post(client, _body(messages=[{"role": "user", "content": [image, {"type": "text", "text": "?"}]}]))
    assert reply.status_code == 400
    assert "messages[0].content[0]" in reply.json()["error"]["message"]


def test_count_tokens_counts_on_the_model() -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    with fake_client(CountingWorld(load_seconds=0.0, features=TOOL_FEATURES)) as client:
        reply = _post(
            client,
            {"model": "m", "system": "s", "messages": [{"role": "user", "content": "hi"}], "tools": tools},
            "/v1/messages/count_tokens",
        )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"input_tokens": 3}


def test_failure_mid_stream_is_an_error_event() -> None:
    with fake_client(CountingWorld(load_seconds=0.0)) as client:
        reply = _post(client, _body(stream=True, stop_sequences=["fail"]))
    events = _events(reply.content)
    name, data = events[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "the model broke"}}


def test_tool_call_chunks_become_tool_use_blocks() -> None:
    from heylook_llm.api.anthropic.stream import BlockEncoder
    from heylook_llm.types import GenerationStats, ToolCallDelta

    encoder = BlockEncoder()
    frames = encoder.chunk(GenerationChunk("", reasoning="hmm"))
    frames += encoder.chunk(GenerationChunk("", tool_calls=[ToolCallDelta(0, "call_1", "f", '{"a"')]))
    frames += encoder.chunk(GenerationChunk("", tool_calls=[ToolCallDelta(0, arguments=": 1}")]))
    frames += encoder.chunk(
        GenerationChunk("", finish_reason=FinishReason.TOOL_CALLS, stats=GenerationStats(5, 2, cached_prompt_tokens=4))
    )
    events = _events(b"".join(frames))
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {}},
    ]
    partial = "".join(
        d["delta"]["partial_json"] for n, d in events if d.get("delta", {}).get("type") == "input_json_delta"
    )
    assert orjson.loads(partial) == {"a": 1}
    end = dict(events)["message_delta"]
    assert end["delta"]["stop_reason"] == "tool_use"
    assert end["usage"]["input_tokens"] == 1 and end["usage"]["cache_read_input_tokens"] == 4
