"""Usage counts the tokens that went to the reasoning section: chat completions'
`completion_tokens_details.reasoning_tokens` (whole and in the streamed usage chunk) and the Responses API's
`output_tokens_details.reasoning_tokens`, on both backends' demo think models (their template opens `<think>`, so
random weights reason until a budget closes it); bodies checked against OpenAI's published schemas."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.integration.test_openai_wire_spec import assert_conforms
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

THINK_MODELS = ["demo-think-gguf", "demo-think-mlx"]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
BUDGET = 6
MAX_TOKENS = 24


@pytest.fixture(params=THINK_MODELS)
def model(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _chat(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert_conforms(data, "CreateChatCompletionResponse")
    return data


def _streamed_usage(client: OpenAI, body: dict[str, Any]) -> Any:
    chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    return usage


def test_budgeted_reasoning_counts_part_of_the_completion(server: ServerProcess, client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": ASK,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "max_reasoning_tokens": BUDGET,
    }
    whole = _chat(server, body)
    assert whole["choices"][0]["message"]["reasoning_content"] and whole["choices"][0]["message"]["content"]
    usage = whole["usage"]
    assert usage["completion_tokens"] == MAX_TOKENS
    # The budget's tokens, the close marker the server forced, and none of the answer.
    assert BUDGET <= usage["completion_tokens_details"]["reasoning_tokens"] < MAX_TOKENS
    sdk_body = {k: v for k, v in body.items() if k != "max_reasoning_tokens"}
    streamed = _streamed_usage(client, {**sdk_body, "extra_body": {"max_reasoning_tokens": BUDGET}})
    assert streamed.completion_tokens == MAX_TOKENS
    # Merged stream chunks keep their parts: the count does not depend on how the tokens were grouped.
    assert streamed.completion_tokens_details is not None
    assert streamed.completion_tokens_details.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]


def test_reasoning_to_the_token_limit_counts_every_token(client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {"model": model, "messages": ASK, "max_tokens": 8, "temperature": 0}
    reply = client.chat.completions.create(**body, reasoning_effort="high")
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert not reply.choices[0].message.content
    assert reply.usage.completion_tokens_details.reasoning_tokens == reply.usage.completion_tokens == 8
    streamed = _streamed_usage(client, {**body, "reasoning_effort": "high"})
    assert streamed.completion_tokens_details.reasoning_tokens == streamed.completion_tokens == 8


@pytest.mark.parametrize("name", ["demo-gguf", "demo-mlx"])
def test_no_reasoning_counts_zero(server: ServerProcess, client: OpenAI, name: str) -> None:
    body: dict[str, Any] = {"model": name, "messages": ASK, "max_tokens": 6, "temperature": 0}
    assert _chat(server, body)["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    streamed = _streamed_usage(client, body)
    assert streamed.completion_tokens == 6 and streamed.completion_tokens_details.reasoning_tokens == 0


def test_reasoning_turned_off_counts_zero(client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {"model": model, "messages": ASK, "max_tokens": 8, "temperature": 0}
    off = client.chat.completions.create(**body, reasoning_effort="none")  # type: ignore[call-overload]
    assert off.choices[0].message.content and off.usage is not None
    assert off.usage.completion_tokens_details is not None
    assert off.usage.completion_tokens_details.reasoning_tokens == 0


def test_responses_usage_counts_reasoning_tokens(server: ServerProcess, client: OpenAI, model: str) -> None:
    body: dict[str, Any] = {
        "model": model,
        "input": "Why?",
        "max_output_tokens": MAX_TOKENS,
        "temperature": 0,
        "store": False,
        "reasoning": {"effort": "high"},
        "max_reasoning_tokens": BUDGET,
    }
    response = httpx.post(f"{server.base_url}/v1/responses", json=body, timeout=120)
    assert response.status_code == 200, response.text
    raw = response.json()
    assert_conforms(raw, "Response")
    assert [item["type"] for item in raw["output"]] == ["reasoning", "message"]
    usage = raw["usage"]
    assert usage["output_tokens"] == MAX_TOKENS
    assert BUDGET <= usage["output_tokens_details"]["reasoning_tokens"] < MAX_TOKENS
    off = client.responses.create(
        model=model, input="Why?", max_output_tokens=8, temperature=0, store=False, reasoning={"effort": "none"}
    )
    assert off.usage is not None and off.usage.output_tokens_details.reasoning_tokens == 0
