"""Fail closed: OpenAI fields this server does not implement are 400s naming them, through the official client
and LangChain-style raw bodies; implemented extras of the completions API (echo, suffix) work."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hi"}]


def test_unimplemented_fields_are_refused_not_dropped(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="demo-gguf", messages=HELLO, max_tokens=4, extra_body={"audio": {"voice": "x", "format": "wav"}}
        )
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "audio" and body["code"] == "unsupported_parameter"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
    ],
)
def test_unimplemented_chat_fields_are_400_in_openai_shape(
    server: ServerProcess, chat_model: str, extra: dict[str, object], param: str
) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": chat_model, "messages": HELLO, "max_tokens": 4, **extra},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and param in error["message"]


def test_harmless_fields_and_extensions_are_accepted(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model="demo-gguf",
        messages=HELLO,
        max_tokens=4,
        tool_choice="none",
        user="someone",
        metadata={"run": "1"},
        store=False,
        extra_body={"some_vendor_extension": True},
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_completion_echo_puts_the_prompt_first(client: OpenAI, server: ServerProcess) -> None:
    plain = client.completions.create(model="demo-gguf", prompt="Once upon", max_tokens=6, temperature=0)
    echoed = client.completions.create(model="demo-gguf", prompt="Once upon", max_tokens=6, temperature=0, echo=True)
    assert echoed.choices[0].text == "Once upon" + plain.choices[0].text
    stream = client.completions.create(
        model="demo-gguf", prompt="Once upon", max_tokens=6, temperature=0, echo=True, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == echoed.choices[0].text


def test_completion_suffix_needs_a_fill_in_the_middle_model(server: ServerProcess) -> None:
    # The demo model has no FIM tokens: the suffix is refused with the reason, not dropped.
    response = httpx.post(
        f"{server.base_url}/v1/completions",
        json={"model": "demo-gguf", "prompt": "def f(", "suffix": "return x", "max_tokens": 4},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "suffix"


def test_best_of_is_refused(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/completions",
        json={"model": "demo-gguf", "prompt": "x", "best_of": 2, "max_tokens": 4},
        timeout=60,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "best_of"


def test_completion_n_gives_n_choices_per_prompt_in_order(client: OpenAI) -> None:
    reply = client.completions.create(model="demo-gguf", prompt=["a", "b"], n=2, max_tokens=4, seed=7, temperature=1)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    alone = client.completions.create(model="demo-gguf", prompt="b", max_tokens=4, seed=8, temperature=1)
    # Choice 1 of prompt "b" samples with seed + 1.
    assert reply.choices[3].text == alone.choices[0].text
    assert reply.usage is not None and reply.usage.completion_tokens == 16


def test_an_assistant_refusal_in_the_history_reaches_the_model(server: ServerProcess) -> None:
    def prompt_tokens(assistant: dict[str, object]) -> int:
        messages = [*HELLO, assistant, {"role": "user", "content": "why?"}]
        response = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "demo-gguf", "messages": messages, "max_tokens": 1},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return int(response.json()["usage"]["prompt_tokens"])

    empty = prompt_tokens({"role": "assistant", "content": ""})
    refused = prompt_tokens({"role": "assistant", "content": None, "refusal": "I cannot help with that."})
    assert refused > empty
