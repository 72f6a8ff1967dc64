"""A JPEG that needs no change goes on without a decode; one cut short is still refused, naming the image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from heylook_llm.api.images import ResizeOptions, process_image
from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import InvalidRequest

pytestmark = pytest.mark.unit
LIMITS = ImageSettings()


def _jpeg(width: int = 320, height: int = 240, **save: object) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "JPEG", **save)
    return buffer.getvalue()


@pytest.mark.parametrize("save", [{}, {"progressive": True}])
def test_an_unchanged_jpeg_is_passed_on_as_it_came(save: dict[str, object]) -> None:
    raw = _jpeg(**save)
    image = process_image(raw, "images[0]", ResizeOptions(), LIMITS)
    assert image.data is raw
    assert (image.mime_type, image.width, image.height) == ("image/jpeg", 320, 240)


@pytest.mark.parametrize("save", [{}, {"progressive": True}])
def test_a_jpeg_cut_short_is_refused(save: dict[str, object]) -> None:
    raw = _jpeg(**save)
    for cut in (len(raw) // 2, len(raw) - 2):
        with pytest.raises(InvalidRequest, match="images\\[1\\] is damaged or truncated") as error:
            process_image(raw[:cut], "images[1]", ResizeOptions(), LIMITS)
        assert error.value.param == "images[1]"


def test_an_end_marker_before_the_scan_does_not_hide_a_cut() -> None:
    # A thumbnail in an application segment carries its own end marker, before the main image's scan.
    thumbnail = _jpeg(32, 24)
    segment = b"\xff\xe2" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    raw = _jpeg()
    crafted = raw[:2] + segment + raw[2:]
    assert process_image(crafted, "x", ResizeOptions(), LIMITS).data is crafted
    with pytest.raises(InvalidRequest, match="truncated"):
        process_image(crafted[: len(crafted) - 500], "x", ResizeOptions(), LIMITS)


def test_a_jpeg_that_changes_is_still_decoded() -> None:
    raw = _jpeg()
    resized = process_image(raw, "x", ResizeOptions(max_side=100), LIMITS)
    assert (resized.width, resized.height) == (100, 75) and resized.data != raw
    assert process_image(raw, "x", ResizeOptions(quality=50), LIMITS).data != raw
