"""Responses API conversion: input items to chat messages, and the typed stream's events and final output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from heylook_llm.api.openai import responses_convert as convert
from heylook_llm.api.openai.responses_schemas import ResponsesRequest
from heylook_llm.api.openai.responses_stream import ResponseEvents
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    ImageData,
    SamplingParams,
    ToolCall,
    ToolCallDelta,
)
from tests.integration.test_openai_wire_spec import assert_conforms
from tests.support.extract_openai_schemas import RESPONSE_EVENT_SCHEMAS

pytestmark = pytest.mark.unit

IMAGE = ImageData(b"png", "image/png", 1, 1)


def _request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", **fields})


def test_items_become_chat_turns() -> None:
    body = _request(
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Use tools."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I will add."}]},
            {"type": "function_call", "call_id": "c1", "name": "add", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "2"},
        ],
    )
    items = body.items()
    refs = convert.image_refs(items, [f"input[{i}]" for i in range(len(items))])
    assert [ref.label for ref in refs] == ["input[1].content[1]"]
    messages = convert.messages(items, body.instructions, [IMAGE])
    assistant = ChatMessage("assistant", "I will add.", tool_calls=[ToolCall("c1", "add", '{"a": 1}')])
    assistant.reasoning = "hm"
    tool = ChatMessage("tool", "2", tool_call_id="c1")
    tool.tool_name = "add"
    assert messages == [
        ChatMessage("system", "Be brief."),
        ChatMessage("system", "Use tools."),
        ChatMessage("user", "look", [IMAGE]),
        assistant,
        tool,
    ]


def test_a_call_without_text_is_an_assistant_turn_of_its_own() -> None:
    items = _request(
        input=[
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        ]
    ).items()
    messages = convert.messages(items, None)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert [c.id for c in messages[1].tool_calls] == ["c1", "c2"] and messages[1].content == ""


def test_stored_items_read_back_as_the_same_items() -> None:
    items = _request(input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]).items()
    stored = [convert.item_json(item) for item in items]
    output = convert.output_items("answer", [ToolCall("c1", "f", "{}")], "why", FinishReason.TOOL_CALLS)
    again = convert.stored_items(json.loads(json.dumps([*stored, *output])))
    messages = convert.messages(again, None)
    assert [(m.role, m.content, m.reasoning, [c.id for c in m.tool_calls]) for m in messages] == [
        ("user", "x", None, []),
        ("assistant", "answer", "why", ["c1"]),
    ]


def _encoder(**fields: Any) -> ResponseEvents:
    body = _request(input="hi", **fields)
    gen = GenerationRequest(model_id="m", sampling=SamplingParams(), request_id="resp_1")

    def build(status: str, output: Any, stats: GenerationStats | None, error: Any) -> dict[str, Any]:
        return convert.response_object(
            body, gen, 1, status=status, output=output, stats=stats, stored=True, error=error
        )

    return ResponseEvents(build)


def _decode(frames: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for frame in frames:
        name, data = frame.decode().rstrip("\n").split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        assert_conforms(event, RESPONSE_EVENT_SCHEMAS[event["type"]])
        events.append(event)
    return events


def test_stream_events_follow_the_items() -> None:
    encoder = _encoder(tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}])
    frames = encoder.start()
    frames += encoder.chunk(GenerationChunk("", reasoning="think"))
    frames += encoder.chunk(GenerationChunk("Hel"))
    frames += encoder.chunk(GenerationChunk("lo", tool_calls=[ToolCallDelta(0, "c1", "f", '{"a"')]))
    frames += encoder.chunk(GenerationChunk("", tool_calls=[ToolCallDelta(0, None, None, ": 1}")]))
    frames += encoder.finish(FinishReason.TOOL_CALLS, GenerationStats(prompt_tokens=5, completion_tokens=3))
    events = _decode(frames)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert_conforms(final, "Response")
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["output"][2]["arguments"] == '{"a": 1}' and final["output"][2]["call_id"] == "c1"
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done == [0, 1, 2]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["total_tokens"] == 8


def test_text_after_a_call_keeps_the_output_in_index_order() -> None:
    encoder = _encoder()
    encoder.start()
    encoder.chunk(GenerationChunk("", tool_calls=[ToolCallDelta(0, "c1", "f", "{}")]))
    encoder.chunk(GenerationChunk("after"))
    _decode(encoder.finish(FinishReason.STOP, GenerationStats()))
    assert encoder.final is not None
    assert [item["type"] for item in encoder.final["output"]] == ["function_call", "message"]


def test_an_empty_answer_is_one_empty_message_and_a_cut_one_is_incomplete() -> None:
    encoder = _encoder()
    encoder.start()
    events = _decode(encoder.finish(FinishReason.LENGTH, GenerationStats()))
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"] == [convert.message_item(final["output"][0]["id"], "", "incomplete")]


def test_a_failure_mid_stream_is_an_error_event_then_response_failed() -> None:
    encoder = _encoder()
    encoder.start()
    encoder.chunk(GenerationChunk("partial"))
    events = _decode(encoder.fail("server_shutting_down", "the server is shutting down", None))
    assert [e["type"] for e in events] == ["error", "response.failed"]
    assert events[1]["response"]["status"] == "failed"
    assert events[1]["response"]["error"] == {"code": "server_error", "message": "the server is shutting down"}
