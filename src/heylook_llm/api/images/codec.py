"""Decode, check, resize and re-encode one image with Pillow (TurboJPEG for JPEG when its library is present).

Runs on a worker thread: every function here is synchronous and CPU-bound.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import InvalidRequest, LimitExceeded
from heylook_llm.types import ImageData

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"})
"""MPO is how Pillow names JPEGs with extra frames (many phone cameras write them)."""
DEFAULT_JPEG_QUALITY = 85
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class ResizeOptions:
    """The request's resize fields; unset fields leave the image as it is."""

    max_side: int | None = None
    """Longest side after resizing; shrinks only."""
    width: int | None = None
    height: int | None = None
    """One of width/height: scale to it keeping the aspect ratio; both: exactly this size."""
    quality: int | None = None
    """JPEG quality 1-100 (default 85). Setting it re-encodes every JPEG, even one that needs no resizing."""
    preserve_alpha: bool = False
    """Keep transparency (the image is sent as PNG); otherwise it is flattened onto white and sent as JPEG."""


class TurboJpegCodec:
    """JPEG decode and encode of RGB pixels through libturbojpeg (the optional `turbojpeg` extra)."""

    def __init__(self, handle: Any, rgb_format: int) -> None:
        self._handle = handle
        self._rgb = rgb_format

    def decode_rgb(self, raw: bytes) -> Any:
        return self._handle.decode(raw, pixel_format=self._rgb)

    def encode_rgb(self, pixels: Any, quality: int) -> bytes:
        encoded: bytes = self._handle.encode(pixels, quality=quality, pixel_format=self._rgb)
        return encoded


def load_turbojpeg() -> TurboJpegCodec | None:
    """The TurboJPEG codec, or None when PyTurboJPEG or libturbojpeg is missing (Pillow is used then)."""
    try:
        # Optional: PyTurboJPEG is the `turbojpeg` extra, not a main dependency.
        from turbojpeg import TJPF_RGB, TurboJPEG

        return TurboJpegCodec(TurboJPEG(), TJPF_RGB)
    except (ImportError, OSError, RuntimeError) as exc:
        log.info("TurboJPEG is not available (%s); JPEG images are decoded with Pillow", exc)
        return None


def _open(raw: bytes, label: str, limits: ImageSettings) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the check that counts; Pillow's warning would only add log noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as exc:
        raise LimitExceeded(
            f"{label} has more pixels than max_image_pixels={limits.max_image_pixels} allows ({exc})", param=label
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(f"{label} is not a readable image: {exc}", param=label) from exc
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidRequest(
            f"{label} is a {image.format} image; accepted formats: jpeg, png, webp, gif, bmp", param=label
        )
    width, height = image.size
    # Checked from the header, before any pixel is decoded: a small file may declare a huge canvas.
    if width * height > limits.max_image_pixels:
        raise LimitExceeded(
            f"{label} is {width}x{height} ({width * height} pixels); the limit is "
            f"max_image_pixels={limits.max_image_pixels}",
            param=label,
        )
    return image


def _decode(image: Image.Image, raw: bytes, label: str, turbo: TurboJpegCodec | None) -> tuple[Image.Image, bool]:
    """Pixels of the first frame, upright, and whether the EXIF orientation turned them."""
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if image.format in ("JPEG", "MPO") else 1
    try:
        if turbo is not None and image.format in ("JPEG", "MPO") and orientation == 1 and image.mode == "RGB":
            return Image.fromarray(turbo.decode_rgb(raw)), False
        image.seek(0)
        image.load()
    except (OSError, ValueError, SyntaxError, IndexError) as exc:
        raise InvalidRequest(f"{label} is damaged or truncated: {exc}", param=label) from exc
    if orientation != 1:
        return ImageOps.exif_transpose(image), True
    return image, False


def _jpeg_as_it_is(image: Image.Image, options: ResizeOptions) -> bool:
    """A JPEG that goes on unchanged: upright, no quality asked, no resizing."""
    if image.format != "JPEG" or options.quality is not None:
        return False
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        return False
    return _target_size(image.size, options) == image.size


def _check_jpeg_end(raw: bytes, label: str) -> None:
    """Refuse a JPEG cut short: its end-of-image marker must follow the start of its scan data. Inside the scan,
    0xFF bytes are stuffed (FF 00) and FF D9 can only be that marker; an EXIF thumbnail's own end marker sits in a
    segment before the scan, so the segments are walked to the first scan first."""
    pos, size = 2, len(raw)
    while pos + 4 <= size:
        if raw[pos] != 0xFF:
            break
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan
            # Searched from the end, where the marker is: a forward search reads the whole scan (0.6 ms at 2 MP).
            if raw.rfind(b"\xff\xd9", pos + 2 + length) >= 0:
                return
            break
        pos += 2 + length
    raise InvalidRequest(f"{label} is damaged or truncated: the JPEG data ends before its end marker", param=label)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def _target_size(size: tuple[int, int], options: ResizeOptions) -> tuple[int, int]:
    width, height = size
    if options.width is not None and options.height is not None:
        width, height = options.width, options.height
    elif options.width is not None:
        width, height = options.width, max(1, round(height * options.width / width))
    elif options.height is not None:
        width, height = max(1, round(width * options.height / height)), options.height
    if options.max_side is not None and max(width, height) > options.max_side:
        scale = options.max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def process_image(
    raw: bytes, label: str, options: ResizeOptions, limits: ImageSettings, turbo: TurboJpegCodec | None = None
) -> ImageData:
    """Check `raw` against the limits, decode it, resize it as asked, and encode it as JPEG or PNG.

    An image that needs no change (a JPEG or PNG of the right size, no quality asked, nothing to flatten) is
    passed on as it came, so that no quality is lost to a second JPEG encoding.
    """
    opened = _checked_open(raw, label, limits)
    unchanged = _unchanged_jpeg(raw, label, opened, options)
    if unchanged is not None:
        return unchanged
    source_format = opened.format
    image, changed = _decode(opened, raw, label, turbo)
    keep_alpha = _has_alpha(image) and options.preserve_alpha
    if _has_alpha(image) and not keep_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image, changed = flat, True
    target = _target_size(image.size, options)
    if target[0] * target[1] > limits.max_image_pixels:
        raise LimitExceeded(
            f"{label}: resizing to {target[0]}x{target[1]} exceeds max_image_pixels={limits.max_image_pixels}",
            param=label,
        )
    if target != image.size:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        changed = True
    width, height = image.size
    if not changed and options.quality is None and source_format in ("JPEG", "PNG"):
        return ImageData(raw, f"image/{source_format.lower()}", width, height)
    if keep_alpha:
        buffer = io.BytesIO()
        image.convert("RGBA").save(buffer, format="PNG", compress_level=3)
        return ImageData(buffer.getvalue(), "image/png", width, height)
    return ImageData(_encode_jpeg(image, options.quality or DEFAULT_JPEG_QUALITY, turbo), "image/jpeg", width, height)


def unchanged_jpeg(raw: bytes, label: str, options: ResizeOptions, limits: ImageSettings) -> ImageData | None:
    """The image as it came when it is a JPEG that goes on unchanged (then only its header and the end of its scan
    data are read: tens of microseconds); None when it needs `process_image`. Raises what `process_image` would
    for an image too large, empty or unreadable."""
    return _unchanged_jpeg(raw, label, _checked_open(raw, label, limits), options)


def _checked_open(raw: bytes, label: str, limits: ImageSettings) -> Image.Image:
    if len(raw) > limits.max_image_bytes:
        raise LimitExceeded(
            f"{label} is {len(raw)} bytes; the limit is max_image_bytes={limits.max_image_bytes}", param=label
        )
    if not raw:
        raise InvalidRequest(f"{label} is empty", param=label)
    return _open(raw, label, limits)


def _unchanged_jpeg(raw: bytes, label: str, opened: Image.Image, options: ResizeOptions) -> ImageData | None:
    if not _jpeg_as_it_is(opened, options):
        return None
    # The backends decode the image themselves: decoding it here too would only check it, and for a JPEG the
    # header (read by _open) and an intact end of the scan data are what that check finds.
    _check_jpeg_end(raw, label)
    width, height = opened.size
    return ImageData(raw, "image/jpeg", width, height)


def _encode_jpeg(image: Image.Image, quality: int, turbo: TurboJpegCodec | None) -> bytes:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if turbo is not None:
        import numpy as np

        return turbo.encode_rgb(np.asarray(rgb), quality)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
