"""Images through both APIs to the llama.cpp vision demo model (a GGUF with an mmproj projector, libmtmd)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from openai import OpenAI

from heylook_llm.backends.llama_vision import ImageChunk, MediaPrompt
from heylook_llm.demo import write_vision_projector_gguf
from tests.conftest import start_server
from tests.support.images import data_url
from tests.support.server import ServerProcess
from tests.support.vision import BLUE, GREEDY, RED, chat_body, multipart, post, reply_of

pytestmark = pytest.mark.integration
MODEL = "demo-vision-gguf"


def _chat_body(*images: str, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return chat_body(model, *images, **extra)


def _multipart(server: ServerProcess, files: list[bytes], placeholders: int, **fields: Any) -> httpx.Response:
    return multipart(server, MODEL, files, placeholders, **fields)


def _text_only(client: OpenAI, text: str = "describe") -> tuple[str, int]:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=12, seed=1
    )
    assert reply.usage is not None and reply.choices[0].message.content is not None
    return reply.choices[0].message.content, reply.usage.prompt_tokens


def test_image_reaches_the_model(server: ServerProcess, client: OpenAI) -> None:
    # Text first: what a text-only request gives before any image has passed through the slots.
    text_before, text_prompt = _text_only(client)
    red, red_prompt = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    blue, blue_prompt = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(BLUE))))
    assert red != blue
    assert red_prompt == blue_prompt
    # 16 image tokens (56x56 pixels in 14x14 patches) plus the newline after the image.
    assert red_prompt >= text_prompt + 16
    assert text_before not in (red, blue)
    # The same image again: its positions come from the prefix cache (its id is its content), same answer.
    again = post(server, "/v1/chat/completions", json=_chat_body(data_url(RED)))
    assert reply_of(again) == (red, red_prompt)
    assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 16
    # The slots now hold image positions: a text-only request must not reuse them as if they were text.
    assert _text_only(client) == (text_before, text_prompt)


def test_a_conversation_about_an_image_reuses_it_from_the_cache(server: ServerProcess) -> None:
    first = _chat_body(data_url(BLUE), text="what is it")
    answer, prompt_tokens = reply_of(post(server, "/v1/chat/completions", json=first))
    follow_up = {
        **first,
        "messages": [*first["messages"], {"role": "assistant", "content": answer}, {"role": "user", "content": "and?"}],
    }
    response = post(server, "/v1/chat/completions", json=follow_up)
    _, follow_up_tokens = reply_of(response)
    assert follow_up_tokens > prompt_tokens
    # At least the template header, the image and the first question come from the slot's cache.
    assert response.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= prompt_tokens - 1


def test_two_images_in_one_message(server: ServerProcess) -> None:
    one_answer, one = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED))))
    two_answer, two = reply_of(post(server, "/v1/chat/completions", json=_chat_body(data_url(RED), data_url(BLUE))))
    assert two > one
    assert two_answer != one_answer


def test_images_in_parallel_match_one_at_a_time(server: ServerProcess) -> None:
    """Image sequences evaluated into different slots, then decoded in one shared batch, as when alone."""
    bodies = [_chat_body(data_url(image), text=text) for image in (RED, BLUE) for text in ("describe", "what is it")]
    alone = [reply_of(post(server, "/v1/chat/completions", json=body)) for body in bodies]
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda body: reply_of(post(server, "/v1/chat/completions", json=body)), bodies))
    assert together == alone


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
    assert chat.message.content == expected
    # Ollama counts evaluated tokens only: the same image and text come from the prefix cache by now.
    assert chat.prompt_eval_count is not None and 1 <= chat.prompt_eval_count <= prompt_tokens
    generated = client.generate(model=MODEL, prompt="describe", images=[encoded_red], options=options)
    assert generated.response == expected
    assert generated.prompt_eval_count is not None and 1 <= generated.prompt_eval_count <= prompt_tokens
    # Token ids cannot hold the image, so no context comes back to continue from.
    assert not generated.context


def test_multipart_streams(server: ServerProcess) -> None:
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


def test_vision_model_is_listed_with_vision(server: ServerProcess) -> None:
    shown = post(server, "/api/show", json={"model": MODEL})
    assert shown.status_code == 200, shown.text
    assert "vision" in shown.json()["capabilities"]


def test_image_to_a_gguf_model_without_projector_is_a_400(server: ServerProcess) -> None:
    response = post(server, "/v1/chat/completions", json=_chat_body(data_url(RED), model="demo-gguf"))
    assert response.status_code == 400, response.text
    assert "model 'demo-gguf' does not accept images" in response.text
    ollama_response = post(
        server,
        "/api/chat",
        json={
            "model": "demo-gguf",
            "messages": [{"role": "user", "content": "x", "images": [base64.b64encode(RED).decode()]}],
        },
    )
    assert ollama_response.status_code == 400 and "demo-gguf" in ollama_response.text


def test_a_projector_that_does_not_fit_the_model_fails_to_load(demo_dir: Path, tmp_path: Path) -> None:
    projector = tmp_path / "narrow-mmproj.gguf"
    write_vision_projector_gguf(projector, text_hidden=32)  # the demo model is 64 wide
    config = tmp_path / "models.yaml"
    config.write_text(
        "models:\n"
        "  - id: wrong-projector\n"
        "    provider: llama_cpp\n"
        f"    config: {{model_path: {demo_dir / 'demo-gguf.gguf'}, mmproj_path: {projector}, n_ctx: 256}}\n"
        "  - id: missing-projector\n"
        "    provider: llama_cpp\n"
        f"    config: {{model_path: {demo_dir / 'demo-gguf.gguf'}, mmproj_path: {tmp_path / 'nope.gguf'}}}\n",
        encoding="utf-8",
    )
    server = start_server(tmp_path, config)
    try:
        for model, needle in (("wrong-projector", "mismatch"), ("missing-projector", "does not exist")):
            response = post(server, "/v1/chat/completions", json={**_chat_body(text="hi"), "model": model})
            assert response.status_code == 500, response.text
            assert f"model '{model}' failed to load" in response.text and needle in response.text
        # The server keeps serving.
        assert httpx.get(f"{server.base_url}/v1/models", timeout=10).status_code == 200
    finally:
        server.stop()


def test_cache_reuse_never_ends_inside_an_image() -> None:
    """An image is evaluated whole: a prefix match that stops inside one is cut back to where it starts."""
    image = ImageChunk(pointer=0, start=4, n_tokens=16, n_pos=16)
    media = MediaPrompt(positions=[1, 2, 3, 4, *[-5] * 16, 7, 8], images=deque([image]), token_count=22)
    assert media.whole_images_before(10) == 4
    assert media.whole_images_before(3) == 3
    assert media.whole_images_before(20) == 20
    media.drop_reused(4)
    assert list(media.images) == [image]
    media.drop_reused(20)
    assert not media.images
    media.prepend([9, 9])
    assert media.positions[:3] == [9, 9, 1] and media.token_count == 24
