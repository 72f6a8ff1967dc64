"""Every OpenAI response shape the server sends, validated against OpenAI's published OpenAPI component schemas.

The schemas come from openai/openai-openapi, extracted into tests/data/openai_schemas.json by
`python -m tests.support.extract_openai_schemas` (the `$ref` closure only, `nullable` rewritten for JSON Schema
2020-12). Raw httpx, not the openai client, so that the exact JSON on the wire is what gets validated. The
Responses API's bodies and stream events are validated the same way in test_openai_responses.py (`assert_conforms`).
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support.extract_openai_schemas import (
    DATA_FILE,
    DEFAULT_SPEC,
    LICENSE_FILE,
    PEER_DIR,
    REF_PREFIX,
    ROOT_SCHEMAS,
    UPSTREAM_COMMIT,
    UPSTREAM_REPO,
    extract,
    render,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

SCHEMAS_URI = "urn:heylookllm:openai-openapi"
MESSAGES = [{"role": "user", "content": "Say hello"}]
MAX_TOKENS = 8


@functools.cache
def _document_text() -> str:
    return DATA_FILE.read_text(encoding="utf-8")


def _document() -> dict[str, Any]:
    """A fresh copy of the extracted document (callers may adapt it)."""
    document: dict[str, Any] = json.loads(_document_text())
    return document


def _schemas(document: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def _validator(name: str, document: dict[str, Any] | None = None) -> Draft202012Validator:
    resource = Resource.from_contents(document or _document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SCHEMAS_URI, resource)
    return Draft202012Validator({"$ref": f"{SCHEMAS_URI}{REF_PREFIX}{name}"}, registry=registry)


def assert_conforms(instance: Any, name: str, document: dict[str, Any] | None = None) -> None:
    errors = sorted(_validator(name, document).iter_errors(instance), key=lambda e: list(e.absolute_path))
    problems = []
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        detail = "; ".join(sub.message for sub in error.context or [])
        problems.append(f"{where}: {error.message}" + (f" ({detail})" if detail else ""))
    assert not problems, f"not a valid {name}:\n" + "\n".join(problems) + f"\n{json.dumps(instance)}"


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server.base_url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def _sse(server: ServerProcess, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON events of a streamed response, which must end with `data: [DONE]`."""
    events: list[dict[str, Any]] = []
    done = False
    with httpx.stream("POST", f"{server.base_url}{path}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert not done, f"event after [DONE]: {line}"
            assert line.startswith("data: "), line
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
            else:
                events.append(json.loads(data))
    assert done, "the stream did not end with data: [DONE]"
    return events


# --- chat completions ------------------------------------------------------------------------------


def _chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0, **extra}


def test_chat_completion(server: ServerProcess, chat_model: str) -> None:
    body = _post(server, "/v1/chat/completions", _chat_body(chat_model))
    assert_conforms(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["refusal"] is None


def _chunk_kinds(chunks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {"role": [], "content": [], "finish": [], "usage": []}
    for chunk in chunks:
        if not chunk["choices"]:
            kinds["usage"].append(chunk)
            continue
        choice = chunk["choices"][0]
        if choice["finish_reason"] is not None:
            kinds["finish"].append(chunk)
        elif "role" in choice["delta"]:
            kinds["role"].append(chunk)
        else:
            kinds["content"].append(chunk)
    return kinds


def test_chat_stream_chunks(server: ServerProcess, chat_model: str) -> None:
    chunks = _sse(server, "/v1/chat/completions", _chat_body(chat_model, stream_options={"include_usage": True}))
    kinds = _chunk_kinds(chunks)
    assert [len(kinds["role"]), len(kinds["finish"]), len(kinds["usage"])] == [1, 1, 1], chunks
    assert kinds["content"], "no content chunk to check"
    assert chunks[0] is kinds["role"][0] and chunks[-1] is kinds["usage"][0]
    for chunk in chunks:
        assert_conforms(chunk, "CreateChatCompletionStreamResponse")
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and {c["created"] for c in chunks} == {chunks[0]["created"]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_chat_with_two_choices(server: ServerProcess, chat_model: str, stream: bool) -> None:
    body = _chat_body(chat_model, n=2, seed=1, temperature=0.8)
    if not stream:
        response = _post(server, "/v1/chat/completions", body)
        assert_conforms(response, "CreateChatCompletionResponse")
        assert [c["index"] for c in response["choices"]] == [0, 1]
        return
    chunks = _sse(server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    for chunk in chunks:
        assert_conforms(chunk, "CreateChatCompletionStreamResponse")
    finished = sorted(c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert finished == [0, 1]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("model", ["demo-tools-gguf", "demo-tools-mlx"])
def test_tool_calls_streamed_and_not(server: ServerProcess, model: str) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
                "required": ["a"],
            },
        },
    }
    body = {
        **_chat_body(model),
        "max_tokens": 100,
        "tools": [tool],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    response = _post(server, "/v1/chat/completions", body)
    assert_conforms(response, "CreateChatCompletionResponse")
    message = response["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "add"
    assert response["choices"][0]["finish_reason"] == "tool_calls"
    chunks = _sse(server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    for chunk in chunks:
        assert_conforms(chunk, "CreateChatCompletionStreamResponse")


# --- completions -------------------------------------------------------------------------------------


def _streamed_completion_document() -> dict[str, Any]:
    """CreateCompletionResponse with `finish_reason` nullable, for streamed chunks before a choice's last one.

    The spec says streamed and non-streamed completions share one shape, yet its `finish_reason` is a required
    non-null enum; OpenAI's own stream (like ours and llama.cpp's) sends `"finish_reason": null` until a choice
    ends. Only that one property is relaxed, and only for those chunks."""
    document = _document()
    choice = _schemas(document)["CreateCompletionResponse"]["properties"]["choices"]["items"]
    reason = choice["properties"]["finish_reason"]
    choice["properties"]["finish_reason"] = {"type": [reason["type"], "null"], "enum": [*reason["enum"], None]}
    return document


def test_completion(server: ServerProcess, chat_model: str) -> None:
    body = {"model": chat_model, "prompt": ["Once upon a time", "Hello"], "max_tokens": MAX_TOKENS, "temperature": 0}
    response = _post(server, "/v1/completions", body)
    assert_conforms(response, "CreateCompletionResponse")
    assert [c["index"] for c in response["choices"]] == [0, 1]


def test_completion_stream_chunks(server: ServerProcess, chat_model: str) -> None:
    """A choice's text may arrive whole in its last chunk (the server coalesces tokens for a few milliseconds),
    so the chunks before it are checked when there are any; 32 tokens make some likely."""
    body = {"model": chat_model, "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}
    chunks = _sse(server, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    usage = [c for c in chunks if not c["choices"]]
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    running = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is None]
    assert len(usage) == 1 and len(finished) == 1 and chunks[-1] is usage[0], chunks
    for chunk in usage + finished:
        assert_conforms(chunk, "CreateCompletionResponse")
    relaxed = _streamed_completion_document()
    for chunk in running:
        assert_conforms(chunk, "CreateCompletionResponse", relaxed)


# --- embeddings -----------------------------------------------------------------------------------


def test_embeddings_float(server: ServerProcess) -> None:
    body = _post(server, "/v1/embeddings", {"model": "demo-embed-gguf", "input": ["hello world", "a fox"]})
    assert_conforms(body, "CreateEmbeddingResponse")
    assert [d["index"] for d in body["data"]] == [0, 1]


def test_embeddings_base64(server: ServerProcess) -> None:
    """The spec describes `embedding` only as a float array: for base64 that one property is swapped for a string
    (still required), and the string must decode to float32s."""
    body = _post(server, "/v1/embeddings", {"model": "demo-embed-gguf", "input": "hello", "encoding_format": "base64"})
    document = _document()
    _schemas(document)["Embedding"]["properties"]["embedding"] = {"type": "string", "contentEncoding": "base64"}
    assert_conforms(body, "CreateEmbeddingResponse", document)
    raw = base64.b64decode(body["data"][0]["embedding"], validate=True)
    assert raw and len(raw) % 4 == 0


# --- models and errors ------------------------------------------------------------------------------


def test_models(server: ServerProcess) -> None:
    listing = httpx.get(f"{server.base_url}/v1/models", timeout=30)
    assert listing.status_code == 200
    assert_conforms(listing.json(), "ListModelsResponse")
    ids = [m["id"] for m in listing.json()["data"]]
    assert {"demo-gguf", "demo-mlx", "demo-embed-gguf"} <= set(ids)
    for model_id in ids:
        one = httpx.get(f"{server.base_url}/v1/models/{model_id}", timeout=30)
        assert one.status_code == 200
        assert_conforms(one.json(), "Model")


def _assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert_conforms(body, "ErrorResponse")
    return body


def test_error_unknown_model(server: ServerProcess) -> None:
    url = server.base_url
    _assert_error(httpx.get(f"{url}/v1/models/no-such-model", timeout=30), 404)
    chat = _assert_error(httpx.post(f"{url}/v1/chat/completions", json=_chat_body("no-such-model"), timeout=30), 404)
    assert chat["error"]["code"] == "model_not_found"
    embed = {"model": "no-such-model", "input": "hi"}
    _assert_error(httpx.post(f"{url}/v1/embeddings", json=embed, timeout=30), 404)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "demo-gguf", "messages": []}),
        ("/v1/chat/completions", {"model": "demo-gguf", "messages": MESSAGES, "temperature": 7}),
        ("/v1/completions", {"model": "demo-gguf", "prompt": []}),
        ("/v1/embeddings", {"model": "demo-embed-gguf", "input": ""}),
    ],
)
def test_error_validation(server: ServerProcess, path: str, body: dict[str, Any]) -> None:
    error = _assert_error(httpx.post(f"{server.base_url}{path}", json=body, timeout=30), 400)
    assert error["error"]["type"] == "invalid_request_error"


# --- the extracted data file ----------------------------------------------------------------------


def _all_refs(node: Any) -> set[str]:
    text = json.dumps(node)
    return {part.split('"', 1)[0] for part in text.split(f'"$ref": "{REF_PREFIX}')[1:]}


@pytest.mark.unit
def test_extracted_schemas_are_complete_and_up_to_date() -> None:
    """With the upstream spec beside the repository (../shared), the data file must be exactly what the extractor
    writes from it; without it (a user's clone), the file must still hold every schema the tests name."""
    document = _document()
    schemas = _schemas(document)
    assert set(ROOT_SCHEMAS) <= set(schemas)
    assert _all_refs(schemas) <= set(schemas), "a $ref points outside the extracted closure"
    assert document["source"]["repository"] == UPSTREAM_REPO and document["source"]["commit"] == UPSTREAM_COMMIT
    assert "nullable" not in json.dumps(schemas)
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    assert "MIT License" in LICENSE_FILE.read_text(encoding="utf-8")
    if DEFAULT_SPEC.is_file():
        spec = json.loads(DEFAULT_SPEC.read_text(encoding="utf-8"))
        expected = render(extract(spec))
        assert _document_text() == expected, "stale: run python -m tests.support.extract_openai_schemas"
        assert LICENSE_FILE.read_text(encoding="utf-8") == (PEER_DIR / "LICENSE").read_text(encoding="utf-8")
