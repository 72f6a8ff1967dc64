"""The OpenAI Responses API (`/v1/responses`) through the official `openai` SDK against a real server, on both
backends; bodies and every streamed event validated against OpenAI's published schemas (tests/data)."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.conftest import start_server
from tests.integration.test_openai_wire_spec import assert_conforms
from tests.integration.test_shutdown_readiness import _slow_config
from tests.support.extract_openai_schemas import RESPONSE_EVENT_SCHEMAS
from tests.support.server import ServerProcess
from tests.support.vision import RED

pytestmark = pytest.mark.integration

TEXT_MODELS = ["demo-gguf", "demo-mlx"]
TOOL_MODELS = ["demo-tools-gguf", "demo-tools-mlx"]
THINK_MODELS = ["demo-think-gguf", "demo-think-mlx"]
VISION_MODELS = ["demo-vision-gguf", "demo-vision-mlx"]
ADD = {
    "type": "function",
    "name": "add",
    "description": "Add a number",
    # Bounded, so that random weights finish the call within max_output_tokens.
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["a"],
        "additionalProperties": False,
    },
    "strict": True,
}
DIGIT = {
    "type": "object",
    "properties": {"digit": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["digit"],
    "additionalProperties": False,
}
JSON_FORMAT: Any = {"format": {"type": "json_schema", "name": "digit", "schema": DIGIT, "strict": True}}
"""A grammar-bounded answer: a random model ends it with a stop, so the response is `completed`."""


@pytest.fixture(scope="module")
def server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own, whose stored responses go to a temporary file, not the per-user data folder."""
    folder = tmp_path_factory.mktemp("responses")
    proc = start_server(folder, demo_dir / "models.yaml", "--response-store", str(folder / "responses.sqlite3"))
    yield proc
    proc.stop()


class Digit(BaseModel):
    digit: int = Field(ge=0, le=9)


def _post(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/v1/responses", json=body, timeout=120)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert_conforms(data, "Response")
    return data


def _events(server: ServerProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events, each checked against its own schema: named SSE events, one sequence, no [DONE]."""
    events: list[dict[str, Any]] = []
    name = None
    with httpx.stream("POST", f"{server.base_url}/v1/responses", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                assert event["type"] == name, line
                assert_conforms(event, RESPONSE_EVENT_SCHEMAS[event["type"]])
                events.append(event)
            else:
                assert not line, line
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    return events


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_plain_response(server: ServerProcess, client: OpenAI, model: str) -> None:
    body = {"model": model, "input": "Say hello", "instructions": "Be brief.", "max_output_tokens": 6}
    raw = _post(server, {**body, "temperature": 0, "metadata": {"k": "v"}, "user": "u1"})
    assert raw["status"] == "incomplete" and raw["incomplete_details"] == {"reason": "max_output_tokens"}
    assert raw["metadata"] == {"k": "v"} and raw["instructions"] == "Be brief."
    reply = client.responses.create(**body, temperature=0)
    assert reply.model == model and reply.object == "response"
    assert [item.type for item in reply.output] == ["message"]
    assert reply.output_text == raw["output"][0]["content"][0]["text"]
    assert reply.usage is not None and reply.usage.output_tokens == 6
    assert reply.usage.input_tokens == raw["usage"]["input_tokens"] > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + 6


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_stream_helper_assembles_the_same_response(server: ServerProcess, client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {"model": model, "input": "A digit?", "max_output_tokens": 40, "temperature": 0}
    whole = client.responses.create(**body, text=JSON_FORMAT)
    with client.responses.stream(**body, text=JSON_FORMAT) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == whole.status == "completed"
    assert "".join(deltas) == final.output_text == whole.output_text
    jsonschema.validate(json.loads(final.output_text), DIGIT)
    parsed = client.responses.parse(**body, text_format=Digit)
    assert parsed.output_parsed == Digit.model_validate_json(whole.output_text)
    assert final.usage is not None and whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens
    events = _events(server, {**body, "text": JSON_FORMAT})
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == whole.output_text


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_stream_that_reaches_max_output_tokens_is_incomplete(server: ServerProcess, model: str) -> None:
    events = _events(server, {"model": model, "input": "Tell a story", "max_output_tokens": 5, "temperature": 0})
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"]["usage"]["output_tokens"] == 5


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_tool_round_trip(server: ServerProcess, client: OpenAI, model: str) -> None:
    ask: list[Any] = [{"role": "user", "content": "Add something"}]
    common: dict[str, Any] = {"model": model, "tools": [ADD], "max_output_tokens": 100, "temperature": 0}
    first = client.responses.create(input=ask, tool_choice="required", parallel_tool_calls=False, **common)
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and len(calls) == 1 and calls[0].name == "add"
    jsonschema.validate(json.loads(calls[0].arguments), ADD["parameters"])
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "5"}
    # Sent back whole (no stored state) ...
    history = [*ask, *(item.model_dump(exclude_none=True) for item in first.output), result]
    second = client.responses.create(input=history, tool_choice="none", store=False, **common)
    assert second.status in ("completed", "incomplete") and second.output[-1].type == "message"
    # ... and chained through the stored first response: the same prompt.
    chained = client.responses.create(input=[result], previous_response_id=first.id, tool_choice="none", **common)
    assert chained.usage is not None and second.usage is not None
    assert chained.usage.input_tokens == second.usage.input_tokens
    assert chained.output_text == second.output_text
    with client.responses.stream(input=ask, tool_choice="required", parallel_tool_calls=False, **common) as stream:
        final = stream.get_final_response()
    assert [(item.type, getattr(item, "arguments", None)) for item in final.output] == [
        ("function_call", calls[0].arguments)
    ]
    events = _events(server, {**common, "input": ask, "tool_choice": "required", "parallel_tool_calls": False})
    arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert arguments == calls[0].arguments


@pytest.mark.parametrize("model", THINK_MODELS)
def test_reasoning_item(server: ServerProcess, client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {"model": model, "input": "Why?", "max_output_tokens": 24, "temperature": 0}
    budget = {"max_reasoning_tokens": 6}
    reply = client.responses.create(**body, reasoning={"effort": "high"}, extra_body=budget)
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    reasoning = reply.output[0]
    assert reasoning.type == "reasoning" and reasoning.content and reasoning.content[0].text
    assert "</think>" not in reasoning.content[0].text and reply.output_text
    events = _events(server, {**body, "reasoning": {"effort": "high"}, **budget})
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert streamed == reasoning.content[0].text
    off = client.responses.create(**body, reasoning={"effort": "none"})
    assert [item.type for item in off.output] == ["message"]


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_input_tokens_counts_the_prompt_that_runs(client: OpenAI, model: str) -> None:
    ask: Any = [{"role": "user", "content": "Add something"}]
    reply = client.responses.create(model=model, input=ask, instructions="Be brief.", max_output_tokens=2)
    counted = client.responses.input_tokens.count(model=model, input=ask, instructions="Be brief.")
    assert counted.object == "response.input_tokens"
    assert reply.usage is not None and counted.input_tokens == reply.usage.input_tokens
    with_tools = client.responses.input_tokens.count(model=model, input=ask, tools=[ADD])  # type: ignore[list-item]
    assert with_tools.input_tokens > client.responses.input_tokens.count(model=model, input=ask).input_tokens
    chained = client.responses.input_tokens.count(model=model, input="Go on", previous_response_id=reply.id)
    assert chained.input_tokens > counted.input_tokens


@pytest.mark.parametrize("model", VISION_MODELS)
def test_input_image(client: OpenAI, model: str) -> None:
    url = "data:image/png;base64," + base64.b64encode(RED).decode()
    body: dict[str, Any] = {"model": model, "max_output_tokens": 4, "temperature": 0}
    text_only = client.responses.create(**body, input="describe")
    content: Any = [
        {"type": "input_image", "image_url": url, "detail": "auto"},
        {"type": "input_text", "text": "describe"},
    ]
    with_image = client.responses.create(**body, input=[{"role": "user", "content": content}])
    assert with_image.usage is not None and text_only.usage is not None
    assert with_image.usage.input_tokens > text_only.usage.input_tokens


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_three_turn_chain_reuses_the_cache(client: OpenAI, model: str) -> None:
    turns = []
    previous = None
    for text in ("First question", "Second question", "Third question"):
        reply = client.responses.create(
            model=model, input=text, previous_response_id=previous, max_output_tokens=4, temperature=0
        )
        turns.append(reply)
        previous = reply.id
    usage = [turn.usage for turn in turns]
    assert all(u is not None for u in usage)
    inputs = [u.input_tokens for u in usage if u is not None]
    cached = [u.input_tokens_details.cached_tokens for u in usage if u is not None]
    # Each turn's prompt holds the one before it (input and output): longer, and read from the prefix cache.
    assert inputs[0] < inputs[1] < inputs[2]
    assert cached[1] > 0 and cached[2] > 0
    assert turns[2].previous_response_id == turns[1].id


def test_retrieve_delete_and_store_false(server: ServerProcess, client: OpenAI) -> None:
    reply = client.responses.create(model="demo-gguf", input="Hi", max_output_tokens=3, temperature=0)
    fetched = client.responses.retrieve(reply.id)
    assert fetched.id == reply.id and fetched.output_text == reply.output_text
    raw = httpx.get(f"{server.base_url}/v1/responses/{reply.id}", timeout=30).json()
    assert_conforms(raw, "Response")
    deleted = httpx.delete(f"{server.base_url}/v1/responses/{reply.id}", timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"id": reply.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(reply.id)
    unstored = client.responses.create(model="demo-gguf", input="Hi", max_output_tokens=3, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_errors_in_openai_shape(server: ServerProcess, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing_model:
        client.responses.create(model="nope", input="Hi")
    assert missing_model.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as missing_previous:
        client.responses.create(model="demo-gguf", input="Hi", previous_response_id="resp_nope")
    assert missing_previous.value.code == "previous_response_not_found"
    assert missing_previous.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as bad_value:
        client.responses.create(model="demo-gguf", input="Hi", temperature=3)
    assert bad_value.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as empty:
        client.responses.create(model="demo-gguf", input=[])
    assert empty.value.param == "input"
    with pytest.raises(openai.BadRequestError) as unknown_tool:
        client.responses.create(model="demo-gguf", input="Hi", tool_choice={"type": "function", "name": "f"})
    assert unknown_tool.value.param == "tool_choice"
    refused: list[tuple[dict[str, Any], str]] = [
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
    ]
    for extra, param in refused:
        body = {"model": "demo-gguf", "input": "Hi", **extra}
        response = httpx.post(f"{server.base_url}/v1/responses", json=body, timeout=30)
        assert response.status_code == 400, response.text
        assert_conforms(response.json(), "ErrorResponse")
        assert (
            response.json()["error"]["param"] == param and response.json()["error"]["code"] == "unsupported_parameter"
        )


@pytest.fixture()
def small_store(demo_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    path = tmp_path / "store" / "responses.sqlite3"
    proc = start_server(tmp_path, demo_dir / "models.yaml", "--response-store", str(path), "--response-store-max", "2")
    yield proc, path
    proc.stop()


def test_store_keeps_the_newest_and_can_be_turned_off(
    small_store: tuple[ServerProcess, Path], demo_dir: Path, tmp_path: Path
) -> None:
    server, path = small_store
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    ids = [client.responses.create(model="demo-gguf", input=f"n{i}", max_output_tokens=2).id for i in range(3)]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ids[0])
    assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]
    with closing(sqlite3.connect(path)) as db:
        assert sorted(row[0] for row in db.execute("SELECT id FROM responses")) == sorted(ids[1:])
    server.stop()
    off = start_server(tmp_path, demo_dir / "models.yaml", "--no-response-store")
    try:
        off_client = OpenAI(base_url=f"{off.base_url}/v1", api_key="x", max_retries=0, timeout=60)
        reply = off_client.responses.create(model="demo-gguf", input="Hi", max_output_tokens=2)
        assert reply.to_dict()["store"] is False
        with pytest.raises(openai.NotFoundError):
            off_client.responses.retrieve(reply.id)
        with pytest.raises(openai.BadRequestError) as refused:
            off_client.responses.create(model="demo-gguf", input="Hi", previous_response_id=reply.id)
        assert "--no-response-store" in str(refused.value)
    finally:
        off.stop()


def test_shutdown_ends_a_stream_with_error_then_response_failed(demo_dir: Path, tmp_path: Path) -> None:
    """SIGTERM past --shutdown-timeout: OpenAI's `error` event, then `response.failed`; nothing is stored."""
    store = tmp_path / "responses.sqlite3"
    server = start_server(
        tmp_path, _slow_config(demo_dir, tmp_path), "--shutdown-timeout", "1", "--response-store", str(store)
    )
    # A grammar that cannot end before 20,000 numbers outlasts the timeout (about 100 s on 2 cores).
    never_ending = {"type": "array", "items": {"type": "integer"}, "minItems": 20000}
    body = {
        "model": "slow",
        "input": "hello",
        "max_output_tokens": 20000,
        "temperature": 0,
        "stream": True,
        "text": {"format": {"type": "json_schema", "name": "numbers", "schema": never_ending}},
    }
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        with httpx.stream("POST", f"{server.base_url}/v1/responses", json=body, timeout=60) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    lines.append(line.removeprefix("data: "))
                    if '"response.output_text.delta"' in line:
                        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(60), server.log()
        server.proc.send_signal(signal.SIGTERM)
        reader.join(30)
        assert not reader.is_alive()
    finally:
        server.stop()
    events = [json.loads(line) for line in lines]
    for event in events:
        assert_conforms(event, RESPONSE_EVENT_SCHEMAS[event["type"]])
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "server_shutting_down"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["message"] == events[-2]["message"]
    if store.exists():
        with closing(sqlite3.connect(store)) as db:
            assert db.execute("SELECT id FROM responses").fetchall() == []
