"""/api/chat, /api/generate and embeddings, driven by the official `ollama` client (raw httpx for framing)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from ollama import Client, ResponseError
from openai import OpenAI

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

CHAT_MODELS = ["demo-gguf", "demo-mlx"]
HELLO = [{"role": "user", "content": "Say hello to the tests"}]
GREEDY = {"temperature": 0, "num_predict": 12}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 150}, "available": {"type": "boolean"}},
    "required": ["age", "available"],
    # Without it, random weights invent keys until num_predict runs out.
    "additionalProperties": False,
}


@pytest.fixture(params=CHAT_MODELS)
def chat_model(request: pytest.FixtureRequest) -> str:
    model: str = request.param
    return model


@pytest.fixture()
def ollama(server: ServerProcess) -> Client:
    return Client(host=server.base_url, timeout=120)


def _ndjson(server: ServerProcess, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    response = httpx.post(f"{server.base_url}{path}", json=body, timeout=120)
    return response, [orjson.loads(line) for line in response.text.splitlines()]


def test_chat_streams_pieces_then_a_final_line_with_measurements(ollama: Client, chat_model: str) -> None:
    parts = list(ollama.chat(model=chat_model, messages=HELLO, options=GREEDY, stream=True))
    assert all(p.done is False and p.message.role == "assistant" for p in parts[:-1])
    final = parts[-1]
    assert final.done is True and final.done_reason == "length"
    assert final.eval_count == 12
    assert final.prompt_eval_count is not None and final.prompt_eval_count > 0
    for duration in (final.total_duration, final.prompt_eval_duration, final.eval_duration):
        assert duration is not None and duration > 0
    assert final.load_duration is not None and final.load_duration >= 0
    assert final.total_duration is not None and final.eval_duration is not None
    assert final.total_duration >= final.eval_duration
    streamed = "".join(p.message.content or "" for p in parts)
    whole = ollama.chat(model=chat_model, messages=HELLO, options=GREEDY, stream=False)
    assert whole.message.content == streamed and streamed
    assert whole.eval_count == 12 and whole.done_reason == "length"


def test_generate_streaming_and_not_give_the_same_text(ollama: Client, chat_model: str) -> None:
    streamed = list(ollama.generate(model=chat_model, prompt="Once upon a time", options=GREEDY, stream=True))
    final = streamed[-1]
    assert final.done and final.done_reason == "length" and final.eval_count == 12
    whole = ollama.generate(model=f"{chat_model}:latest", prompt="Once upon a time", options=GREEDY)
    assert whole.response == "".join(p.response or "" for p in streamed) and whole.response
    assert whole.model == f"{chat_model}:latest"


def test_stream_framing_is_ndjson(server: ServerProcess) -> None:
    response, lines = _ndjson(server, "/api/chat", {"model": "demo-gguf", "messages": HELLO, "options": GREEDY})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n") and len(lines) >= 2
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["message"] == {"role": "assistant", "content": ""}
    for line in lines:
        assert line["model"] == "demo-gguf" and line["created_at"].endswith("Z")


def test_seed_makes_sampling_repeatable(ollama: Client, chat_model: str) -> None:
    options = {"temperature": 1.0, "seed": 1234, "num_predict": 16}
    first = ollama.chat(model=chat_model, messages=HELLO, options=options).message.content
    second = ollama.chat(model=chat_model, messages=HELLO, options=options).message.content
    assert first == second and first


def test_stop_strings_end_the_output_early(ollama: Client) -> None:
    text = ollama.generate(model="demo-gguf", prompt="Once", options={"temperature": 0, "num_predict": 40}).response
    stop = text[10:13]
    assert stop.strip()
    stopped = ollama.generate(
        model="demo-gguf", prompt="Once", options={"temperature": 0, "num_predict": 40, "stop": [stop]}
    )
    assert stopped.done_reason == "stop"
    assert stopped.response == text[: text.index(stop)]


def test_generate_context_continues_the_conversation(ollama: Client) -> None:
    first = ollama.generate(model="demo-gguf", prompt="Hello", options=GREEDY)
    alone = ollama.generate(model="demo-gguf", prompt="More", options=GREEDY)
    second = ollama.generate(model="demo-gguf", prompt="More", context=first.context, options=GREEDY)
    assert first.context and alone.context and second.context
    assert second.context[: len(first.context)] == list(first.context)
    alone_prompt = len(alone.context) - alone.eval_count  # type: ignore[operator]
    assert len(second.context) - second.eval_count == len(first.context) + alone_prompt  # type: ignore[operator]
    # The whole prompt is counted (as Ollama counts it), though the first exchange is still in a slot's KV cache.
    assert second.prompt_eval_count == len(first.context) + alone_prompt


def test_raw_prompt_spells_control_tokens_and_returns_no_context(ollama: Client) -> None:
    # The demo chat template renders exactly this text for one user turn: raw mode must tokenize the
    # control tokens as such, so both requests see the same tokens and greedy decoding writes the same text.
    formatted = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    raw = ollama.generate(model="demo-gguf", prompt=formatted, raw=True, options=GREEDY)
    templated = ollama.generate(model="demo-gguf", prompt="hi", options=GREEDY)
    assert raw.context is None and templated.context
    # The same tokens, each counted (the second request finds all but the last one in the prefix cache).
    assert templated.prompt_eval_count == len(templated.context) - templated.eval_count  # type: ignore[operator]
    assert raw.response == templated.response


def test_suffix_on_a_model_without_fill_in_the_middle_is_a_clear_400(ollama: Client) -> None:
    with pytest.raises(ResponseError) as err:
        ollama.generate(model="demo-gguf", prompt="def f(", suffix="    return x")
    assert err.value.status_code == 400 and "fill-in-the-middle" in err.value.error


def _validates(value: Any) -> None:
    assert isinstance(value, dict) and set(value) >= {"age", "available"}
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool)
    assert isinstance(value["available"], bool)
    assert set(value) <= set(SCHEMA["properties"])


def test_format_schema_output_parses_and_validates(ollama: Client) -> None:
    for seed in (1, 2, 3):
        options = {"temperature": 0.8, "seed": seed, "num_predict": 400}
        reply = ollama.chat(model="demo-gguf", messages=HELLO, format=SCHEMA, options=options)
        assert reply.done_reason == "stop"
        # json, not orjson: the grammar allows exponents like 1E852, valid JSON beyond a double's range.
        _validates(json.loads(reply.message.content or ""))
    generated = ollama.generate(model="demo-gguf", prompt="Age?", format=SCHEMA, options={"temperature": 0})
    _validates(orjson.loads(generated.response or ""))


def test_format_json_output_is_a_json_object(ollama: Client) -> None:
    # JSON mode leaves strings unbounded, and random weights ramble inside them: of a few seeded samples at
    # least one must close its object (a seed that does is known), and every one must stay JSON-shaped.
    finished = []
    for seed in (5, 6, 3):
        options = {"temperature": 1.5, "seed": seed, "num_predict": 1500}
        reply = ollama.generate(model="demo-gguf", prompt="JSON please", format="json", options=options)
        assert (reply.response or "").startswith("{")
        if reply.done_reason == "stop":
            # json, not orjson: the grammar allows exponents like 1E852, valid JSON beyond a double's range.
            finished.append(json.loads(reply.response or ""))
    assert finished and all(isinstance(value, dict) for value in finished)


def test_format_on_mlx_is_honoured_or_clearly_refused(ollama: Client) -> None:
    try:
        reply = ollama.chat(model="demo-mlx", messages=HELLO, format=SCHEMA, options={"num_predict": 400})
    except ResponseError as err:
        assert err.status_code == 400 and "format" in err.error
    else:
        # json, not orjson: the grammar allows exponents like 1E852, valid JSON beyond a double's range.
        _validates(json.loads(reply.message.content or ""))


def test_bad_schema_is_a_400_naming_format(server: ServerProcess) -> None:
    body = {"model": "demo-gguf", "prompt": "x", "stream": False, "format": {"type": "no-such-type"}}
    response = httpx.post(f"{server.base_url}/api/generate", json=body, timeout=60)
    assert response.status_code == 400 and "format" in response.json()["error"]


def test_ollama_and_openai_agree_on_greedy_text(ollama: Client, server: ServerProcess, chat_model: str) -> None:
    openai = OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=60)
    ours = ollama.chat(model=chat_model, messages=HELLO, options={"temperature": 0, "num_predict": 16})
    theirs = openai.chat.completions.create(model=chat_model, messages=HELLO, temperature=0, max_tokens=16)  # type: ignore[arg-type]
    assert ours.message.content == theirs.choices[0].message.content


def test_embed_one_and_many_inputs(ollama: Client) -> None:
    one = ollama.embed(model="demo-embed-gguf", input="hello world")
    many = ollama.embed(model="demo-embed-gguf", input=["hello world", "another text"])
    assert len(one.embeddings) == 1 and len(many.embeddings) == 2
    assert many.embeddings[0] == pytest.approx(one.embeddings[0], abs=1e-5)
    assert sum(v * v for v in many.embeddings[1]) == pytest.approx(1.0, abs=1e-4)
    assert many.prompt_eval_count is not None and many.prompt_eval_count > 0
    short = ollama.embed(model="demo-embed-gguf", input="hello world", dimensions=8)
    assert len(short.embeddings[0]) == 8 and sum(v * v for v in short.embeddings[0]) == pytest.approx(1.0, abs=1e-4)


def test_embed_truncate_false_refuses_long_input(ollama: Client) -> None:
    long_text = "hello world " * 600  # beyond the embedding model's 512-token context
    with pytest.raises(ResponseError) as err:
        ollama.embed(model="demo-embed-gguf", input=long_text, truncate=False)
    assert err.value.status_code == 400
    assert len(ollama.embed(model="demo-embed-gguf", input=long_text).embeddings[0]) == 64


def test_legacy_embeddings_endpoint(ollama: Client) -> None:
    legacy = ollama.embeddings(model="demo-embed-gguf", prompt="hello world")
    current = ollama.embed(model="demo-embed-gguf", input="hello world")
    assert list(legacy.embedding) == pytest.approx(list(current.embeddings[0]), abs=1e-5)


def test_wrong_kind_of_model_is_a_400(ollama: Client) -> None:
    with pytest.raises(ResponseError) as chat_err:
        ollama.chat(model="demo-embed-gguf", messages=HELLO, stream=False)
    assert chat_err.value.status_code == 400 and "embedding" in chat_err.value.error
    with pytest.raises(ResponseError) as embed_err:
        ollama.embed(model="demo-gguf", input="x")
    assert embed_err.value.status_code == 400


def test_unknown_model_is_404_in_ollamas_shape(server: ServerProcess, ollama: Client) -> None:
    with pytest.raises(ResponseError) as err:
        ollama.chat(model="no-such-model", messages=HELLO)
    assert err.value.status_code == 404 and "no-such-model" in err.value.error
    response = httpx.post(f"{server.base_url}/api/generate", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert response.status_code == 404 and set(response.json()) == {"error"}


def test_bad_values_are_400s_naming_the_field(server: ServerProcess) -> None:
    cases = [
        ("/api/chat", {"model": "demo-gguf", "messages": HELLO, "options": {"temperature": "hot"}}, "temperature"),
        ("/api/generate", {"model": "demo-gguf", "prompt": "x", "keep_alive": "later"}, "keep_alive"),
        ("/api/chat", {"model": "demo-gguf", "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ("/api/chat", {"model": "demo-gguf", "messages": HELLO, "think": True}, "thinking"),
    ]
    for path, body, word in cases:
        response = httpx.post(f"{server.base_url}{path}", json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert word in response.json()["error"]


def test_form_encoded_bodies_are_read_as_json_like_ollama_does(server: ServerProcess) -> None:
    # `curl -d '{...}'`, as in Ollama's own documentation, sends application/x-www-form-urlencoded.
    body = orjson.dumps({"model": "demo-gguf", "prompt": "hi", "stream": False, "options": GREEDY})
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = httpx.post(f"{server.base_url}/api/generate", content=body, headers=headers, timeout=60)
    assert response.status_code == 200 and response.json()["eval_count"] == 12


def test_resource_options_are_accepted_and_unimplemented_samplers_refused(ollama: Client) -> None:
    # num_ctx is honoured now (a larger context reloads the model): tests/integration/test_memory_budget.py.
    options = {**GREEDY, "mirostat": 0, "num_gpu": 99, "num_thread": 3, "typical_p": 1.0, "num_ctx": 2048}
    plain = ollama.chat(model="demo-gguf", messages=HELLO, options=GREEDY).message.content
    assert ollama.chat(model="demo-gguf", messages=HELLO, options=options).message.content == plain
    for name, value in (("mirostat", 2), ("typical_p", 0.5), ("tfs_z", 0.9)):
        with pytest.raises(ResponseError) as err:
            ollama.chat(model="demo-gguf", messages=HELLO, options={**GREEDY, name: value})
        assert err.value.status_code == 400 and f"options.{name}" in err.value.error


def test_load_only_requests_are_checked_too(server: ServerProcess) -> None:
    # An empty chat only loads the model, but a field it cannot honour is still refused, not dropped.
    for path, body in (
        ("/api/chat", {"model": "demo-gguf", "messages": [], "options": {"typical_p": 0.5}}),
        ("/api/generate", {"model": "demo-gguf", "options": {"mirostat": 1}}),
    ):
        response = httpx.post(f"{server.base_url}{path}", json=body, timeout=60)
        assert response.status_code == 400, response.text
