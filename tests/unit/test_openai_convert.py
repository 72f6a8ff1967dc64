"""The OpenAI dialect against the engine façade, in-process with a fake backend: requests become neutral requests,
neutral chunks become OpenAI JSON and SSE, errors take OpenAI's envelope."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from heylook_llm.api.openai import convert
from heylook_llm.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.types import FinishReason, GenerationStats
from tests.support.inprocess import fake_client

pytestmark = pytest.mark.unit

HELLO = [{"role": "user", "content": "hi"}]
ENTRY = parse_registry({"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None)
SETTINGS = ServerSettings()


def _events(text: str) -> list[Any]:
    payloads = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def test_chat_request_maps_roles_parts_and_sampling() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None, "refusal": "no"},
            ],
            "max_completion_tokens": 7,
            "temperature": 0.2,
            "stop": "x",
            "response_format": {"type": "json_object"},
        }
    )
    gen = convert.chat_request(body, ENTRY.models[0], SETTINGS)
    assert [(m.role, m.content) for m in gen.messages or []] == [
        ("system", "be brief"),
        ("user", "a\nb"),
        ("assistant", "no"),
    ]
    assert gen.sampling.max_tokens == 7 and gen.sampling.temperature == 0.2 and gen.sampling.stop == ("x",)
    assert gen.response_format == "json" and gen.request_id.startswith("chatcmpl-")


def test_completion_requests_multiply_prompts_by_n_with_seeds() -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"], "n": 2, "seed": 5})
    gens = convert.completion_requests(body, ENTRY.models[0], SETTINGS)
    assert [(g.prompt, g.sampling.seed) for g in gens] == [("a", 5), ("a", 6), ("b", 5), ("b", 6)]


def test_chat_response_has_the_spec_fields() -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": HELLO})
    gen = convert.chat_request(body, ENTRY.models[0], SETTINGS)
    reply = convert.chat_response(gen, "hey", FinishReason.LENGTH, GenerationStats(3, 2, 1))
    message = reply["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "hey", "refusal": None}
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_chat_through_the_facade_non_streamed_and_streamed() -> None:
    with fake_client() as client:
        whole = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "max_tokens": 3}).json()
        assert whole["choices"][0]["message"]["content"] == "t0 t1 t2 "
        assert whole["choices"][0]["finish_reason"] == "length"
        streamed = client.post(
            "/v1/chat/completions",
            json={
                "model": "m",
                "messages": HELLO,
                "max_tokens": 3,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    events = _events(streamed.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "t0 t1 t2 "
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 3


def test_n_choices_and_completions_through_the_facade() -> None:
    with fake_client() as client:
        chat = client.post(
            "/v1/chat/completions", json={"model": "m", "messages": HELLO, "max_tokens": 2, "n": 3}
        ).json()
        assert [c["index"] for c in chat["choices"]] == [0, 1, 2] and chat["usage"]["completion_tokens"] == 6
        done = client.post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 2, "echo": True}).json()
    assert done["choices"][0]["text"] == "xt0 t1 "


def test_errors_take_openai_envelope_with_the_field_named() -> None:
    with fake_client() as client:
        unknown = client.post("/v1/chat/completions", json={"model": "nope", "messages": HELLO})
        refused = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "logprobs": True})
        invalid = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "temperature": 9})
        fim = client.post("/v1/completions", json={"model": "m", "prompt": "a", "suffix": "b"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "logprobs"
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "temperature"
    # The fake model declares chat and completion only: a suffix is refused by the feature check.
    assert fim.status_code == 400 and fim.json()["error"]["param"] == "suffix"
    assert "fill-in-the-middle" in fim.json()["error"]["message"]


def test_models_list_shows_declared_capabilities() -> None:
    with fake_client(ids=("a", "b")) as client:
        listed = client.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["a", "b"]
    assert listed["data"][0]["capabilities"] == ["completion", "tools"]
