"""A large JPEG reaches both vision backends decoded at a DCT reduction (backends/image_decode.py): the request
is answered as for the same pixels sent as PNG, which each backend still decodes whole."""

from __future__ import annotations

import io

import pytest
from openai import OpenAI
from PIL import Image

from tests.support.images import data_url, encoded, gradient
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def _ask(client: OpenAI, model: str, image: bytes, mime: str) -> tuple[str, int]:
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(image, mime)}},
                    {"type": "text", "text": "describe"},
                ],
            }
        ],
        temperature=0,
        max_tokens=16,
        seed=1,
    )
    assert reply.usage is not None and reply.choices[0].message.content is not None
    return reply.choices[0].message.content, reply.usage.prompt_tokens


@pytest.fixture(scope="module")
def photo_pair() -> tuple[bytes, bytes]:
    """A 640x480 JPEG (decoded at 1/4, 160x120, for the demo models' 56-pixel input) and its own pixels as PNG."""
    jpeg = encoded(gradient(640, 480, seed=3), "JPEG", quality=95)
    with Image.open(io.BytesIO(jpeg)) as opened:
        png = encoded(opened.convert("RGB"), "PNG")
    return jpeg, png


def test_both_backends_take_the_reduced_decode(server: ServerProcess, client: OpenAI) -> None:
    # Loaded by this test's requests if not before: the log says which decode each model got.
    client.chat.completions.create(model="demo-vision-mlx", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    client.chat.completions.create(model="demo-vision-gguf", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    log = server.log()
    assert "images decoded for ShortestEdge(edge=56)" in log
    assert "JPEGs decoded for FixedSize(width=56, height=56)" in log


def test_large_jpeg_counts_as_the_same_image(client: OpenAI, photo_pair: tuple[bytes, bytes]) -> None:
    jpeg, png = photo_pair
    for model in ("demo-vision-mlx", "demo-vision-gguf"):
        _, jpeg_tokens = _ask(client, model, jpeg, "image/jpeg")
        _, png_tokens = _ask(client, model, png, "image/png")
        assert jpeg_tokens == png_tokens  # the same 16 image tokens: the model's input size is unchanged


def test_gguf_answer_is_unchanged_by_the_reduced_decode(client: OpenAI, photo_pair: tuple[bytes, bytes]) -> None:
    # libmtmd decodes the PNG whole (stb_image) and resizes it to 56x56; the JPEG arrives as 160x120 RGB pixels.
    jpeg, png = photo_pair
    assert _ask(client, "demo-vision-gguf", jpeg, "image/jpeg") == _ask(client, "demo-vision-gguf", png, "image/png")
