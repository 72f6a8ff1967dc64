"""Images through both APIs to the MLX vision demo model (mlx-vlm), and bad image inputs on a real server."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import ollama
import pytest
from openai import OpenAI

from tests.support.images import data_url, png_bomb
from tests.support.server import ServerProcess
from tests.support.vision import BLUE, GREEDY, RED, chat_body, multipart, post, reply_of

pytestmark = pytest.mark.integration
MODEL = "demo-vision-mlx"


def _chat_body(*images: str, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return chat_body(model, *images, **extra)


def _multipart(server: ServerProcess, files: list[bytes], placeholders: int, **fields: Any) -> httpx.Response:
    return multipart(server, MODEL, files, placeholders, **fields)


def test_image_reaches_the_model(server: ServerProcess, client: OpenAI) -> None:
    red, red_prompt = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    blue, blue_prompt = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(BLUE))))
    # The same text without an image: the vision model still answers text-only requests.
    text_only = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "describe"}], temperature=0, max_tokens=12, seed=1
    )
    assert red != blue
    assert red_prompt == blue_prompt
    assert text_only.usage is not None and red_prompt > text_only.usage.prompt_tokens
    assert text_only.choices[0].message.content not in (red, blue)
    again, _ = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    assert again == red


def test_two_images_in_one_message(server: ServerProcess) -> None:
    _, one = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    _, two = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED), data_url(BLUE))))
    assert two > one


def test_openai_client_sends_images(server: ServerProcess, client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(RED)}},
                    {"type": "text", "text": "describe"},
                ],
            }
        ],
        temperature=0,
        max_tokens=12,
        seed=1,
    )
    expected, _ = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    assert reply.choices[0].message.content == expected


def test_same_image_same_answer_through_every_door(server: ServerProcess) -> None:
    expected, prompt_tokens = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    assert reply_of(_multipart(server, [RED], 1)) == (expected, prompt_tokens)
    client = ollama.Client(host=server.base_url)
    options = {"temperature": 0, "num_predict": 12, "seed": 1}
    encoded_red = base64.b64encode(RED).decode()
    chat = client.chat(
        model=MODEL, messages=[{"role": "user", "content": "describe", "images": [encoded_red]}], options=options
    )
    assert chat.message.content == expected and chat.prompt_eval_count == prompt_tokens
    generated = client.generate(model=MODEL, prompt="describe", images=[encoded_red], options=options)
    assert generated.response == expected


def test_multipart_streams_and_resizes(server: ServerProcess) -> None:
    plain, _ = reply_of(_multipart(server, [RED], 1))
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/chat/completions/multipart",
        data={"model": MODEL, "messages": json.dumps(_chat_body("__RAW_IMAGE__")["messages"]), "stream": "true"}
        | {k: str(v) for k, v in GREEDY.items()},
        files=[("images", ("red.png", RED, "image/png"))],
        timeout=120,
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert streamed == plain
    # Resizing happens before the model sees the image: a 1-pixel-wide version gives another answer.
    tiny, _ = reply_of(_multipart(server, [RED], 1, resize_width=2, resize_height=2))
    assert tiny != plain


def _error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    text = response.text
    for needle in needles:
        assert needle in text, text


def test_bad_image_inputs_are_clear_client_errors(server: ServerProcess) -> None:
    v1 = "/v1/chat/completions"
    _error(
        post(server, v1, json={**_chat_body(data_url(RED)), "model": "demo-gguf"}),
        400,
        "model 'demo-gguf' does not accept images",
    )
    _error(post(server, v1, json=_chat_body("data:image/png;base64,!!!notbase64!!!")), 400, "not valid base64")
    _error(post(server, v1, json=_chat_body("file:///etc/passwd")), 400, "file paths are refused")
    _error(post(server, v1, json=_chat_body("http://127.0.0.1:1/cat.png")), 400, "allow_private_urls is off")
    _error(post(server, v1, json=_chat_body(*[data_url(RED)] * 17)), 413, "max_images_per_request=16")
    _error(post(server, v1, json=_chat_body(data_url(png_bomb()))), 413, "max_image_pixels", "400000000 pixels")
    _error(
        post(server, v1, json=_chat_body(data_url(RED), data_url(b"GIF89a-broken"))),
        400,
        "messages[0].content[1] is not a readable image",
    )
    _error(_multipart(server, [RED, BLUE], 1), 400, "1 __RAW_IMAGE__ placeholders but 2 image files")
    _error(
        post(
            server, "/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["%%"]}]}
        ),
        400,
        "messages[0].images[0] is not valid base64",
    )
    _error(
        post(
            server,
            "/api/generate",
            json={"model": "demo-mlx", "prompt": "x", "images": [base64.b64encode(RED).decode()]},
        ),
        400,
        "model 'demo-mlx' does not accept images",
    )
    # The server keeps serving after all of that.
    answer, _ = reply_of(post(server, v1, json=_chat_body(data_url(RED))))
    assert answer


def _turns(image: str, reply: str, follow_up: str) -> list[dict[str, Any]]:
    first = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "describe"}]
    return [
        {"role": "user", "content": first},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": follow_up},
    ]


def _chat(server: ServerProcess, messages: list[dict[str, Any]]) -> tuple[str, int, int]:
    """(text, prompt tokens, cached prompt tokens) of a greedy chat completion."""
    response = post(server, "/v1/chat/completions", json={"model": MODEL, "messages": messages, **GREEDY})
    text, prompt = reply_of(response)
    return text, prompt, response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_next_turn_reuses_the_cache_only_for_the_same_image(server: ServerProcess) -> None:
    red, blue = data_url(RED), data_url(BLUE)
    first, _ = reply_of(post(server, "/v1/chat/completions", json=_chat_body(red)))
    # Turn 2 after turn 1: the image and the first turn come from the cache, and the answer is the cold one's.
    warm, prompt, cached = _chat(server, _turns(red, first, "and the colours?"))
    assert 0 < cached < prompt
    # The same turn 2 after a request with another image: nothing reused (the same image-token ids hold other
    # pixels), and the same answer.
    reply_of(post(server, "/v1/chat/completions", json=_chat_body(blue)))
    cold, cold_prompt, cold_cached = _chat(server, _turns(red, first, "and the colours?"))
    assert (cold, cold_prompt, cold_cached) == (warm, prompt, 0)
    # Turn 2 with the blue image where turn 1 had the red one: the token ids match the cache, the pixels do not.
    reply_of(post(server, "/v1/chat/completions", json=_chat_body(red)))
    swapped, _, swapped_cached = _chat(server, _turns(blue, first, "and the colours?"))
    assert swapped_cached == 0
    reply_of(post(server, "/v1/chat/completions", json=_chat_body(red)))
    assert _chat(server, _turns(blue, first, "and the colours?"))[0] == swapped


def test_text_turns_reuse_the_cache(server: ServerProcess) -> None:
    hello = [{"role": "user", "content": "hello there"}]
    first, _, _ = _chat(server, hello)
    turn_two = [*hello, {"role": "assistant", "content": first}, {"role": "user", "content": "go on"}]
    warm, prompt, cached = _chat(server, turn_two)
    assert 0 < cached < prompt
    reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    assert _chat(server, turn_two) == (warm, prompt, 0)


def test_a_request_ended_by_a_stop_string_leaves_no_cache(server: ServerProcess) -> None:
    red = data_url(RED)
    first, _ = reply_of(post(server, "/v1/chat/completions", json=_chat_body(red)))
    # mlx-vlm would go on generating past a stop string, so that turn's cache is never complete: dropped.
    stopped, _ = reply_of(post(server, "/v1/chat/completions", json=_chat_body(red, stop=[first[4:8]])))
    assert len(stopped) < len(first)
    assert _chat(server, _turns(red, first, "and the colours?"))[2] == 0
