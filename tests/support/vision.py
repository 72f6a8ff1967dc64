"""Request helpers shared by the vision tests of both backends."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.images import encoded, gradient
from tests.support.server import ServerProcess

GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12, "seed": 1}
RED = encoded(gradient(64, 48, seed=1))
BLUE = encoded(gradient(64, 48, seed=7))


def chat_body(model: str, *images: str, text: str = "describe", **extra: Any) -> dict[str, Any]:
    """A greedy chat request with image parts before the text, as the OpenAI API takes it."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    parts.append({"type": "text", "text": text})
    return {"model": model, "messages": [{"role": "user", "content": parts}], **GREEDY, **extra}


def post(server: ServerProcess, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", timeout=120, **kwargs)


def reply_of(response: httpx.Response) -> tuple[str, int]:
    """(text, prompt tokens) of a successful chat completion."""
    assert response.status_code == 200, response.text
    body = response.json()
    return body["choices"][0]["message"]["content"], body["usage"]["prompt_tokens"]


def multipart(
    server: ServerProcess, model: str, files: list[bytes], placeholders: int, **fields: Any
) -> httpx.Response:
    """The multipart endpoint with `placeholders` __RAW_IMAGE__ parts and `files` uploaded in order."""
    body = chat_body(model, *["__RAW_IMAGE__"] * placeholders, **fields)
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
    uploads = [("images", (f"img{i}.png", data, "image/png")) for i, data in enumerate(files)]
    return post(server, "/v1/chat/completions/multipart", data=form, files=uploads)
