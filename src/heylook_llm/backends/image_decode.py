"""Decode request images only as large as the model's image processor will use them.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (Pillow's `Image.draft`), which costs a
fraction of a full decode and leaves the processor less to resize. The rule for how far is read from the
processor an MLX model loaded with (or from a llama.cpp projector's GGUF header): where its output size is a known
function of the input size (CLIP's shortest edge, SigLIP's fixed height and width, Qwen2-VL's pixel budget, a
llava-style projector's square), the smallest scale is chosen whose decoded image the processor still resizes
down (never up, and by at least REDUCING_GAP) to the size it makes of the full image. Any other processor
(tiling, padding, pan-and-scan, processors of mlx-vlm's own) gets the full decode: a smaller image than it would
have resized to is never handed to a model.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from PIL import Image, ImageOps, UnidentifiedImageError

from heylook_llm.errors import InvalidRequest

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

DCT_SCALES = (8, 4, 2)
"""The reductions libjpeg decodes to directly, largest first."""
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
"""EXIF orientations that turn the image a quarter: the stored width is the upright height."""
_MIN_SIDE_TO_REDUCE = 64
"""Below this no reduction is tried: Pillow's scale choice is not exact for sides of a few blocks."""
REDUCING_GAP = 2.0
"""A reduced decode keeps at least this many times the processor's output size on each side, as Pillow's
thumbnail does by default: from about 1x the DCT reduction (a box filter) would show in the processor's output
(measured: 5 levels of 255 on average for a noisy 640x480 image reduced to 80x60 for a 74x56 output; 1.3 levels
with this gap)."""

# Processor classes whose resize is the plain one of transformers' image processor backends (CLIP, SigLIP) or
# Qwen2-VL's smart_resize; matched by module, so that a class of another package with the same name does not pass.
_PLAIN_RESIZE_MODULES = ("transformers.models.clip.", "transformers.models.siglip.")
_PIXEL_BUDGET_MODULES = ("transformers.models.qwen2_vl.",)


@dataclass(frozen=True, slots=True)
class ShortestEdge:
    """The shorter side becomes `edge`, the longer one keeps the aspect ratio (truncated), as CLIP does."""

    edge: int

    def target(self, width: int, height: int) -> tuple[int, int]:
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.edge * long / short)
        return (self.edge, new_long) if width <= height else (new_long, self.edge)


@dataclass(frozen=True, slots=True)
class FixedSize:
    """Every image becomes width x height, whatever its aspect ratio, as SigLIP does."""

    width: int
    height: int

    def target(self, width: int, height: int) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True, slots=True)
class PixelBudget:
    """Qwen2-VL's smart_resize: sides rounded to multiples of `factor`, the area kept within the budget."""

    factor: int
    min_pixels: int
    max_pixels: int

    def target(self, width: int, height: int) -> tuple[int, int]:
        f = self.factor
        h_bar, w_bar = round(height / f) * f, round(width / f) * f
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h_bar = max(f, math.floor(height / beta / f) * f)
            w_bar = max(f, math.floor(width / beta / f) * f)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar, w_bar = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return w_bar, h_bar


ResizeRule = ShortestEdge | FixedSize | PixelBudget


def _field(size: Any, name: str) -> int | None:
    """`name` of a processor's size, which is a dict in older transformers and a SizeDict in newer ones."""
    value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _plain_rule(size: Any) -> ResizeRule | None:
    edge, height, width = _field(size, "shortest_edge"), _field(size, "height"), _field(size, "width")
    others = [n for n in ("longest_edge", "max_height", "max_width", "min_pixels", "max_pixels") if _field(size, n)]
    if others:
        return None  # another resize mode of the backend; not worked out here
    if edge is not None and height is None and width is None:
        return ShortestEdge(edge)
    if edge is None and height is not None and width is not None:
        return FixedSize(width, height)
    return None


def _budget_rule(processor: Any, size: Any) -> ResizeRule | None:
    patch, merge = getattr(processor, "patch_size", None), getattr(processor, "merge_size", None)
    if not isinstance(patch, int) or not isinstance(merge, int) or patch <= 0 or merge <= 0:
        return None
    # transformers 5 keeps the budget as size.shortest_edge / size.longest_edge (in pixels); older versions as
    # size.min_pixels / size.max_pixels or as attributes of the processor.
    low = _field(size, "min_pixels") or _field(size, "shortest_edge") or getattr(processor, "min_pixels", None)
    high = _field(size, "max_pixels") or _field(size, "longest_edge") or getattr(processor, "max_pixels", None)
    if not isinstance(low, int) or not isinstance(high, int) or not 0 < low <= high:
        return None
    return PixelBudget(patch * merge, low, high)


def processor_rule(image_processor: Any) -> ResizeRule | None:
    """How `image_processor` sizes an image, or None where that is not worked out safely (decode whole then)."""
    if image_processor is None or getattr(image_processor, "do_resize", False) is not True:
        return None
    module = type(image_processor).__module__ + "."
    size = getattr(image_processor, "size", None)
    if size is None:
        return None
    if module.startswith(_PLAIN_RESIZE_MODULES):
        if getattr(image_processor, "do_pad", False) or getattr(image_processor, "do_image_splitting", False):
            return None
        return _plain_rule(size)
    if module.startswith(_PIXEL_BUDGET_MODULES):
        return _budget_rule(image_processor, size)
    return None


# llama.cpp projectors that turn every image into one square of clip.vision.image_size pixels (llava-style; those
# with image_grid_pinpoints cut high-resolution tiles instead and are left out). Whether clip.cpp pads to a square,
# resizes to it or resizes the shortest edge and crops, a decoded image at least that large on both sides is
# still only made smaller.
_SQUARE_PROJECTORS = frozenset({"mlp", "mlp_norm", "ldp", "ldpv2"})


def projector_rule(metadata: dict[str, Any]) -> ResizeRule | None:
    """How a llama.cpp vision projector (its GGUF key-values) sizes an image, or None: decode whole then."""
    side = metadata.get("clip.vision.image_size")
    if metadata.get("clip.projector_type") not in _SQUARE_PROJECTORS or not isinstance(side, int) or side <= 0:
        return None
    if any(key.startswith(("clip.vision.image_grid_pinpoints", "clip.minicpmv")) for key in metadata):
        return None
    return FixedSize(side, side)


def _scaled(side: int, scale: int) -> int:
    return (side + scale - 1) // scale  # what libjpeg decodes a side to at 1/scale


def decode_scale(rule: ResizeRule | None, width: int, height: int) -> int:
    """The largest DCT reduction (8, 4, 2, or 1 for none) of an upright width x height image after which `rule`
    still resizes down, by REDUCING_GAP at least, to the size it gives the full image (within a pixel on a side it
    derives by truncation)."""
    if rule is None or min(width, height) < _MIN_SIDE_TO_REDUCE:
        return 1
    full = rule.target(width, height)
    for scale in DCT_SCALES:
        w, h = _scaled(width, scale), _scaled(height, scale)
        if w < full[0] * REDUCING_GAP or h < full[1] * REDUCING_GAP:
            continue  # too close to the output size, or smaller than it
        reduced = rule.target(w, h)
        # A pixel budget fixes the number of image tokens: it must match exactly. A shortest edge's other side is
        # truncated from the aspect ratio, which the rounding up of the decoded sides can move by one.
        tolerance = 0 if isinstance(rule, PixelBudget) else 1
        if abs(reduced[0] - full[0]) <= tolerance and abs(reduced[1] - full[1]) <= tolerance:
            return scale
    return 1


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # The request's image pipeline already checked the pixel count against the server's limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"an image of the request could not be read: {exc}") from exc


def decode_rgb(data: bytes, rule: ResizeRule | None) -> Image.Image:
    """The image in `data` as upright RGB pixels; a JPEG decoded at the reduction `rule` allows."""
    image = _open(data)
    try:
        orientation = 1
        if image.format in ("JPEG", "MPO"):
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            stored_w, stored_h = image.size
            upright = (stored_h, stored_w) if orientation in _SWAPS_SIDES else (stored_w, stored_h)
            scale = decode_scale(rule, *upright)
            if scale > 1:
                # draft picks the largest reduction that keeps both sides >= the requested size.
                image.draft(image.mode, (stored_w // scale, stored_h // scale))
                if image.size != (_scaled(stored_w, scale), _scaled(stored_h, scale)):
                    log.debug("JPEG draft gave %s for %dx%d at 1/%d; decoding whole", image.size, *upright, scale)
                    image.close()
                    image = _open(data)
        image.load()
        upright_image = ImageOps.exif_transpose(image) if orientation != 1 else image
        # The loaded image is returned itself where it is already RGB and upright: no copy of its pixels.
        return upright_image if upright_image.mode == "RGB" else upright_image.convert("RGB")
    except (OSError, ValueError, SyntaxError, IndexError) as exc:
        image.close()
        raise InvalidRequest(f"an image of the request is damaged or truncated: {exc}") from exc


_POOL_THREADS = 8
_decode_pool: ThreadPoolExecutor | None = None
_decode_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _decode_pool
    with _decode_pool_lock:
        if _decode_pool is None:
            _decode_pool = ThreadPoolExecutor(max_workers=_POOL_THREADS, thread_name_prefix="image-decode")
        return _decode_pool


def map_images(
    fn: Callable[[T], R], items: Sequence[T], workers: int, discard: Callable[[R], None] | None = None
) -> list[R]:
    """`fn` over `items`, results in order, at most `workers` (the server's `decode_threads`) at once.

    Pillow's JPEG decoder and llama.cpp's image loading release the GIL, so a request's images decode on several
    cores instead of one after another (8 two-megapixel JPEGs: about half the time on 2 cores); a single image is
    decoded on the caller's thread. When any call raises, the others' results are passed to `discard` (native
    buffers to free) and the first error, in item order, is raised."""
    threads = min(workers, len(items), _POOL_THREADS, os.cpu_count() or 1)
    if threads < 2:
        return [fn(item) for item in items]
    results: list[R | None] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    indices = iter(range(len(items)))
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            try:
                results[index] = fn(items[index])
            except BaseException as exc:  # kept: every image must finish before an error leaves
                errors[index] = exc

    for future in [_pool().submit(drain) for _ in range(threads)]:
        future.result()
    made = cast(list[R], [result for index, result in enumerate(results) if index not in errors])
    if errors:
        if discard is not None:
            for result in made:
                discard(result)
        raise errors[min(errors)]
    return made
