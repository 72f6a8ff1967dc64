"""The image pipeline without a server: decoding, limits, resizing, sources."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from heylook_llm.api.images import ImagePipeline, ImageRef, ResizeOptions, process_image
from heylook_llm.api.images.codec import load_turbojpeg
from heylook_llm.api.images.sources import read_ref
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import CapabilityError, InvalidRequest, LimitExceeded
from tests.support.images import data_url, encoded, gradient, png_bomb

pytestmark = pytest.mark.unit
LIMITS = ImageSettings()


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_unchanged_jpeg_and_png_pass_through() -> None:
    for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        raw = encoded(gradient(40, 30), fmt)
        out = process_image(raw, "img", ResizeOptions(), LIMITS)
        assert (out.data, out.mime_type, out.width, out.height) == (raw, mime, 40, 30)


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP"])
def test_other_formats_become_jpeg(fmt: str) -> None:
    out = process_image(encoded(gradient(20, 10), fmt), "img", ResizeOptions(), LIMITS)
    assert out.mime_type == "image/jpeg" and _size(out.data) == (20, 10)


def test_resize_max_shrinks_only_and_keeps_aspect() -> None:
    raw = encoded(gradient(400, 200))
    out = process_image(raw, "img", ResizeOptions(max_side=100), LIMITS)
    assert (out.width, out.height) == (100, 50) == _size(out.data)
    same = process_image(raw, "img", ResizeOptions(max_side=1000), LIMITS)
    assert (same.width, same.height) == (400, 200) and same.data == raw


def test_one_side_keeps_aspect_both_sides_exact() -> None:
    raw = encoded(gradient(400, 200))
    assert _size(process_image(raw, "img", ResizeOptions(width=200), LIMITS).data) == (200, 100)
    assert _size(process_image(raw, "img", ResizeOptions(height=50), LIMITS).data) == (100, 50)
    assert _size(process_image(raw, "img", ResizeOptions(width=64, height=64), LIMITS).data) == (64, 64)


@pytest.mark.parametrize("turbo", [False, True])
def test_jpeg_quality_changes_size(turbo: bool) -> None:
    handle = load_turbojpeg() if turbo else None
    if turbo and handle is None:
        pytest.skip("libturbojpeg is not installed")
    raw = encoded(gradient(200, 200), "JPEG", quality=95)
    low = process_image(raw, "img", ResizeOptions(quality=20), LIMITS, handle)
    high = process_image(raw, "img", ResizeOptions(quality=95), LIMITS, handle)
    assert low.mime_type == high.mime_type == "image/jpeg"
    assert len(low.data) < len(high.data) * 0.7


def test_alpha_kept_as_png_or_flattened() -> None:
    rgba = Image.new("RGBA", (30, 30), (255, 0, 0, 0))
    raw = encoded(rgba)
    kept = process_image(raw, "img", ResizeOptions(preserve_alpha=True, max_side=10), LIMITS)
    assert kept.mime_type == "image/png"
    with Image.open(io.BytesIO(kept.data)) as image:
        assert image.mode == "RGBA" and image.getpixel((0, 0))[3] == 0
    flat = process_image(raw, "img", ResizeOptions(), LIMITS)
    assert flat.mime_type == "image/jpeg"
    with Image.open(io.BytesIO(flat.data)) as image:
        assert image.mode == "RGB" and min(image.getpixel((0, 0))) > 240  # transparent -> white


def test_corrupt_and_truncated_images_name_the_image() -> None:
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[1\] is not a readable image"):
        process_image(b"not an image at all", "messages[0].content[1]", ResizeOptions(), LIMITS)
    truncated = encoded(gradient(100, 100), "JPEG")[:300]
    with pytest.raises(InvalidRequest, match=r"images\[2\]"):
        process_image(truncated, "images[2]", ResizeOptions(max_side=10), LIMITS)


def test_decompression_bomb_refused_before_decoding() -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000
    with pytest.raises(LimitExceeded, match="max_image_pixels"):
        process_image(bomb, "images[0]", ResizeOptions(), LIMITS)


def test_byte_limit_and_upscale_limit() -> None:
    small = ImageSettings(max_image_bytes=100, max_image_pixels=10_000)
    with pytest.raises(LimitExceeded, match="max_image_bytes=100"):
        process_image(encoded(gradient(50, 50)), "img", ResizeOptions(), small)
    roomy = ImageSettings(max_image_pixels=10_000)
    with pytest.raises(LimitExceeded, match="max_image_pixels"):
        process_image(encoded(Image.new("RGB", (10, 10))), "img", ResizeOptions(width=500, height=500), roomy)


async def test_sources_refuse_files_and_private_hosts() -> None:
    with pytest.raises(InvalidRequest, match="file paths are refused"):
        await read_ref(ImageRef("img", url="file:///etc/passwd"), LIMITS)
    with pytest.raises(InvalidRequest, match="file paths are refused"):
        await read_ref(ImageRef("img", url="/etc/passwd"), LIMITS)
    for url in ("http://127.0.0.1:9/x.png", "http://[::1]/x.png", "http://169.254.169.254/latest", "http://10.0.0.1/"):
        with pytest.raises(InvalidRequest, match="allow_private_urls is off"):
            await read_ref(ImageRef("img", url=url), LIMITS)


async def test_base64_and_data_urls() -> None:
    raw = encoded(gradient(8, 8))
    assert await read_ref(ImageRef("img", url=data_url(raw)), LIMITS) == raw
    wrapped = data_url(raw).split(",", 1)[1]
    wrapped = "\n".join(wrapped[i : i + 40] for i in range(0, len(wrapped), 40))
    assert await read_ref(ImageRef("img", base64_data=wrapped), LIMITS) == raw
    with pytest.raises(InvalidRequest, match=r"images\[0\] is not valid base64"):
        await read_ref(ImageRef("images[0]", base64_data="@@@not*base64@@@"), LIMITS)
    with pytest.raises(InvalidRequest, match="not an image"):
        await read_ref(ImageRef("img", url="data:text/plain;base64,aGVsbG8="), LIMITS)


def _entry(provider: str, config: dict[str, object]) -> ModelEntry:
    return ModelEntry.model_validate({"id": "m", "provider": provider, "config": config})


async def test_pipeline_checks_vision_and_count() -> None:
    pipeline = ImagePipeline(ImageSettings(max_images_per_request=2))
    raw = encoded(gradient(8, 8))
    refs = [ImageRef(f"images[{i}]", data=raw) for i in range(3)]
    with pytest.raises(CapabilityError, match="model 'm' does not accept images"):
        await pipeline.prepare("m", False, refs[:1], ResizeOptions())
    with pytest.raises(LimitExceeded, match="max_images_per_request=2"):
        await pipeline.prepare("m", True, refs, ResizeOptions())
    images = await pipeline.prepare("m", True, refs[:2], ResizeOptions(max_side=4))
    assert [(i.width, i.height) for i in images] == [(4, 4), (4, 4)]


class _Handler(BaseHTTPRequestHandler):
    image = encoded(gradient(8, 8))

    def do_GET(self) -> None:
        if self.path.startswith("/hop/"):
            left = int(self.path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/hop/{left - 1}" if left > 1 else "/cat.png")
            self.end_headers()
            return
        body = self.image if self.path == "/cat.png" else self.image * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def image_host() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def test_fetch_follows_bounded_redirects_each_checked(image_host: str) -> None:
    allowed = ImageSettings(allow_private_urls=True, max_redirects=3, max_image_bytes=10_000)
    assert await read_ref(ImageRef("img", url=f"{image_host}/hop/3"), allowed) == _Handler.image
    with pytest.raises(InvalidRequest, match="max_redirects=3"):
        await read_ref(ImageRef("img", url=f"{image_host}/hop/4"), allowed)
    with pytest.raises(LimitExceeded, match="max_image_bytes=10000"):
        await read_ref(ImageRef("img", url=f"{image_host}/big.png"), allowed)
    with pytest.raises(InvalidRequest, match="allow_private_urls is off"):
        await read_ref(ImageRef("img", url=f"{image_host}/cat.png"), LIMITS)


def test_dialects_put_prepared_images_on_their_messages() -> None:
    from heylook_llm.api.ollama import convert as ollama_convert
    from heylook_llm.api.ollama.schemas import ChatRequest, GenerateRequest
    from heylook_llm.api.openai import convert as openai_convert
    from heylook_llm.api.openai.image_parts import image_refs
    from heylook_llm.api.openai.schemas import ChatCompletionRequest
    from heylook_llm.config.settings import ServerSettings
    from heylook_llm.types import ImageData

    entry = _entry("mlx", {"model_path": "x", "vision": True})
    pics = [ImageData(bytes([i]), "image/png", 1, 1) for i in range(3)]
    body = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "a", "images": ["QQ==", "Qg=="]},
                {"role": "user", "content": "b", "images": ["Qw=="]},
            ],
        }
    )
    assert [r.label for r in ollama_convert.image_refs(body)] == [
        "messages[0].images[0]",
        "messages[0].images[1]",
        "messages[1].images[0]",
    ]
    messages = ollama_convert.chat_request(body, entry, ServerSettings(), pics).messages or []
    assert [m.images for m in messages] == [pics[:2], pics[2:]]
    generate = GenerateRequest.model_validate({"model": "m", "prompt": "p", "images": ["QQ=="], "resize_max": 64})
    assert generate.resize_options().max_side == 64
    assert (ollama_convert.generate_request(generate, entry, ServerSettings(), pics[:1]).messages or [])[
        -1
    ].images == pics[:1]
    with pytest.raises(InvalidRequest, match="raw"):
        raw = GenerateRequest.model_validate({"model": "m", "prompt": "p", "images": ["QQ=="], "raw": True})
        ollama_convert.generate_request(raw, entry, ServerSettings(), pics[:1])
    openai_body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "t"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ],
        }
    )
    assert [r.label for r in image_refs(openai_body)] == ["messages[0].content[1]"]
    converted = openai_convert.chat_request(openai_body, entry, ServerSettings(), pics[:1])
    assert (
        converted.messages is not None
        and converted.messages[0].images == pics[:1]
        and converted.messages[0].content == "t"
    )


async def test_pipeline_passes_unchanged_jpegs_on_and_still_refuses_broken_ones() -> None:
    """Unchanged JPEGs are checked on the event loop (no worker thread); the checks are process_image's."""
    pipeline = ImagePipeline(LIMITS)
    raw = encoded(gradient(40, 30), "JPEG")
    mixed = [ImageRef("images[0]", data=raw), ImageRef("images[1]", data=encoded(gradient(40, 30), "PNG"))]
    jpeg, png = await pipeline.prepare("m", True, mixed, ResizeOptions())
    assert (jpeg.data, jpeg.mime_type, jpeg.width, jpeg.height) == (raw, "image/jpeg", 40, 30)
    assert (png.mime_type, png.width, png.height) == ("image/png", 40, 30)
    cut = raw[: len(raw) - 40]  # the end of the scan data and its end marker are gone
    with pytest.raises(InvalidRequest, match=r"images\[0\]"):
        await pipeline.prepare("m", True, [ImageRef("images[0]", data=cut)], ResizeOptions())
    with pytest.raises(LimitExceeded, match="max_image_bytes"):
        await ImagePipeline(ImageSettings(max_image_bytes=100)).prepare(
            "m", True, [ImageRef("images[0]", data=raw)], ResizeOptions()
        )
