"""Errors in OpenAI's envelope with the right status codes, seen through the official client and raw HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_unknown_model_is_404_naming_it(client: OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in str(err.value)
    response = httpx.get(f"{server.base_url}/v1/models/no-such-model")
    assert response.status_code == 404
    error = _error(response)
    assert error["code"] == "model_not_found" and "no-such-model" in str(error["message"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "demo-gguf", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "demo-gguf", "messages": []}, "messages"),
        ({"model": "demo-gguf"}, "messages"),
        ({"model": "demo-gguf", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}, "temperature"),
        ({"model": "demo-gguf", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "demo-gguf", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}}, "logit_bias"),
    ],
)
def test_validation_errors_are_400_naming_the_field(server: ServerProcess, body: dict[str, object], param: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in str(error["message"])


def test_malformed_json_is_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    _error(response)


def test_prompt_longer_than_the_context_is_400_with_both_numbers(client: OpenAI) -> None:
    long_text = "hello world " * 1500
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo-gguf", messages=[{"role": "user", "content": long_text}])
    message = str(err.value)
    assert "2048" in message and "context" in message
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="2048"):
        client.chat.completions.create(
            model="demo-gguf", messages=[{"role": "user", "content": long_text}], stream=True
        )


def test_image_parts_are_refused_clearly(client: OpenAI) -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo-gguf", messages=[{"role": "user", "content": content}])
    assert "demo-gguf" in str(err.value) and "image" in str(err.value)


def test_text_parts_are_joined(client: OpenAI) -> None:
    parts = [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "to the tests"}]
    result = client.chat.completions.create(
        model="demo-gguf", messages=[{"role": "user", "content": parts}], max_tokens=3, temperature=0
    )
    assert result.usage is not None and result.usage.completion_tokens == 3


def test_chat_with_the_embedding_model_and_embeddings_from_the_chat_model_are_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="embedding"):
        client.chat.completions.create(model="demo-embed-gguf", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        client.embeddings.create(model="demo-gguf", input="hi")


def test_unknown_route_is_404_in_the_envelope(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/v1/nothing-here")
    assert response.status_code == 404
    _error(response)
