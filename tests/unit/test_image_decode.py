"""Images decoded only as large as the model's processor uses them (backends/image_decode.py), checked with real
JPEGs made by Pillow and the real transformers processors of each resize shape."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from heylook_llm.backends.image_decode import (
    FixedSize,
    PixelBudget,
    ShortestEdge,
    decode_rgb,
    decode_scale,
    map_images,
    processor_rule,
    projector_rule,
)
from heylook_llm.demo import write_vision_projector_gguf
from heylook_llm.errors import InvalidRequest
from heylook_llm.gguf_header import read_gguf_header

pytestmark = pytest.mark.unit

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

WIDTH, HEIGHT = 1632, 1224  # 2 megapixels, as the images benchmark sends


def photo(width: int = WIDTH, height: int = HEIGHT, *, fmt: str = "JPEG", mode: str = "RGB", **save: Any) -> bytes:
    """Smooth gradients with some noise, so that a reduced decode has real detail to lose."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    # A dark block in the top-left corner shows which way an image was turned.
    image.paste((0, 0, 0), (0, 0, width // 4, height // 4))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photo(quality=90)


def full_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def pixel_values(processor: Any, image: Image.Image) -> np.ndarray:
    return np.asarray(processor(image, return_tensors="np")["pixel_values"])


def clip(edge: int = 56) -> CLIPImageProcessorPil:
    """The demo vision model's processor: shortest edge, then a centre crop."""
    return CLIPImageProcessorPil(size={"shortest_edge": edge}, crop_size={"height": edge, "width": edge})


# --- the rule read from each processor shape ------------------------------------------------------------------


def test_rules_of_the_processor_shapes() -> None:
    assert processor_rule(clip()) == ShortestEdge(56)
    assert processor_rule(SiglipImageProcessorPil(size={"height": 384, "width": 384})) == FixedSize(384, 384)
    assert processor_rule(Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=200_000)) == PixelBudget(
        28, 3136, 200_000
    )


def test_processors_not_worked_out_decode_whole() -> None:
    # Tiling (anyres), no resizing at all, and objects that are not a known processor all mean a full decode.
    assert processor_rule(LlavaNextImageProcessorPil()) is None
    assert processor_rule(CLIPImageProcessorPil(do_resize=False)) is None
    assert processor_rule(None) is None

    class LooksLikeClip:
        do_resize = True
        size = {"shortest_edge": 56}

    assert processor_rule(LooksLikeClip()) is None


def test_scales_chosen_for_each_shape() -> None:
    # Each reduction keeps twice the processor's output size on each side (REDUCING_GAP).
    assert decode_scale(ShortestEdge(56), WIDTH, HEIGHT) == 8  # 204x153 >= 2 x 74x56
    assert decode_scale(ShortestEdge(224), WIDTH, HEIGHT) == 2  # 408x306 is under 2 x 298x224; 816x612 is not
    assert decode_scale(ShortestEdge(56), 640, 480) == 4  # 80x60 would be barely above 74x56
    assert decode_scale(FixedSize(224, 224), WIDTH, HEIGHT) == 2
    assert decode_scale(FixedSize(384, 384), WIDTH, HEIGHT) == 1  # 816x612 is short of 2 x 384 in height
    # Qwen2-VL's default budget (about 1 MP) takes most of a 2 MP image: a half decode would be enlarged.
    assert decode_scale(PixelBudget(28, 3136, 28 * 28 * 1280), WIDTH, HEIGHT) == 1
    assert decode_scale(PixelBudget(28, 3136, 50_000), WIDTH, HEIGHT) == 2
    assert decode_scale(None, WIDTH, HEIGHT) == 1
    assert decode_scale(ShortestEdge(8), 60, 60) == 1  # too small to be worth reducing


# --- decoded images against the real processors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("processor", "scale"),
    [
        (clip(), 8),
        (clip(224), 2),
        (SiglipImageProcessorPil(size={"height": 224, "width": 224}), 2),
    ],
    ids=["clip-56", "clip-224", "siglip-224"],
)
def test_reduced_decode_leaves_the_processor_output_practically_unchanged(
    jpeg: bytes, processor: Any, scale: int
) -> None:
    rule = processor_rule(processor)
    decoded = decode_rgb(jpeg, rule)
    assert decoded.mode == "RGB"
    assert decoded.size == ((WIDTH + scale - 1) // scale, (HEIGHT + scale - 1) // scale)
    assert rule is not None
    target = rule.target(WIDTH, HEIGHT)
    assert decoded.size[0] >= 2 * target[0] and decoded.size[1] >= 2 * target[1]  # the processor resizes down
    reduced, full = pixel_values(processor, decoded), pixel_values(processor, full_decode(jpeg))
    assert reduced.shape == full.shape
    # Normalised values span about 7 units; 0.02 is under one level of 255 on average.
    assert float(np.abs(reduced - full).mean()) < 0.02


def test_pixel_budget_keeps_the_same_grid(jpeg: bytes) -> None:
    processor = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=50_000)
    decoded = decode_rgb(jpeg, processor_rule(processor))
    assert decoded.size == (WIDTH // 2, HEIGHT // 2)
    reduced = processor(decoded, return_tensors="np")
    full = processor(full_decode(jpeg), return_tensors="np")
    # The grid fixes the number of image tokens: it must be exactly the full image's.
    assert np.array_equal(np.asarray(reduced["image_grid_thw"]), np.asarray(full["image_grid_thw"]))
    assert float(np.abs(np.asarray(reduced["pixel_values"]) - np.asarray(full["pixel_values"])).mean()) < 0.02


def test_without_a_rule_the_jpeg_is_decoded_whole(jpeg: bytes) -> None:
    decoded = decode_rgb(jpeg, None)
    assert decoded.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(decoded), np.asarray(full_decode(jpeg)))


def test_png_is_decoded_whole() -> None:
    png = photo(400, 300, fmt="PNG")
    decoded = decode_rgb(png, ShortestEdge(56))
    assert decoded.size == (400, 300) and decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(full_decode(png)))


def test_grayscale_and_cmyk_jpegs_come_out_rgb() -> None:
    for mode in ("L", "CMYK"):
        decoded = decode_rgb(photo(800, 600, mode=mode, quality=90), ShortestEdge(56))
        assert decoded.mode == "RGB"
        assert decoded.size == (200, 150)  # a quarter: an eighth (100x75) is under twice 74x56


def test_exif_orientation_is_respected_at_reduced_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned a quarter clockwise: portrait
    data = photo(quality=90, exif=exif.tobytes())
    decoded = decode_rgb(data, ShortestEdge(56))
    assert decoded.size == (153, 204)  # upright sides, each an eighth
    upright = full_decode(data)
    assert upright.size == (HEIGHT, WIDTH)
    expected = np.asarray(upright.resize(decoded.size, Image.Resampling.BOX), dtype=np.float32)
    assert float(np.abs(np.asarray(decoded, dtype=np.float32) - expected).mean()) < 3.0
    # The dark block, top-left when stored, is top-right once turned.
    pixels = np.asarray(decoded)
    assert pixels[5, -5].max() < 40 and pixels[5, 5].max() > 40


def test_unreadable_and_truncated_images_are_request_errors(jpeg: bytes) -> None:
    with pytest.raises(InvalidRequest, match="could not be read"):
        decode_rgb(b"not an image at all", ShortestEdge(56))
    with pytest.raises(InvalidRequest, match="damaged or truncated"):
        decode_rgb(jpeg[: len(jpeg) // 2], ShortestEdge(56))


# --- several images of one request ---------------------------------------------------------------------------


def test_images_of_a_request_decode_on_several_threads_in_order(jpeg: bytes) -> None:
    seen: set[str] = set()

    def decode(data: bytes) -> Image.Image:
        seen.add(threading.current_thread().name)
        return decode_rgb(data, ShortestEdge(56))

    small = photo(320, 200, quality=90)
    images = map_images(decode, [jpeg, small, jpeg, small], workers=4)
    assert [image.size for image in images] == [(204, 153), (320, 200), (204, 153), (320, 200)]
    assert all(name.startswith("image-decode") for name in seen)
    if (os.cpu_count() or 1) >= 2:
        assert len(seen) >= 2
    # One image is decoded where the caller runs: no hand-off to pay for.
    here = threading.current_thread().name
    assert map_images(lambda data: threading.current_thread().name, [jpeg], workers=4) == [here]
    # decode_threads: 1 keeps every image on the caller's thread.
    assert map_images(lambda data: threading.current_thread().name, [jpeg, small], workers=1) == [here, here]


def test_a_failed_image_discards_the_others_and_raises_the_first_error(jpeg: bytes) -> None:
    discarded: list[Image.Image] = []
    with pytest.raises(InvalidRequest, match="could not be read"):
        map_images(lambda data: decode_rgb(data, None), [jpeg, b"junk", jpeg[:100], jpeg], 4, discarded.append)
    assert [image.size for image in discarded] == [(WIDTH, HEIGHT), (WIDTH, HEIGHT)]


# --- llama.cpp projectors -------------------------------------------------------------------------------------


def test_square_projectors_get_their_image_size(tmp_path: Path) -> None:
    # The demo's projector, as written to disk and read back from its header.
    projector = tmp_path / "mmproj.gguf"
    write_vision_projector_gguf(projector, text_hidden=64)
    header = read_gguf_header(projector)
    assert projector_rule(header.metadata) == FixedSize(56, 56)
    assert decode_scale(projector_rule(header.metadata), WIDTH, HEIGHT) == 8


def test_tiling_and_dynamic_projectors_decode_whole() -> None:
    llava = {"clip.projector_type": "mlp", "clip.vision.image_size": 336}
    assert projector_rule(llava) == FixedSize(336, 336)
    assert projector_rule({**llava, "clip.vision.image_grid_pinpoints": [336, 672]}) is None  # llava-next tiles
    assert projector_rule({**llava, "clip.minicpmv_version": 2}) is None
    for kind in ("qwen2vl_merger", "gemma3", "idefics3", "pixtral", "resampler"):
        assert projector_rule({**llava, "clip.projector_type": kind}) is None
    assert projector_rule({"clip.projector_type": "mlp"}) is None
