"""Turn a request's image references into checked, resized `ImageData`; decoding and resizing run off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import BaseModel, Field

from heylook_llm.api.images.codec import (
    ResizeOptions,
    TurboJpegCodec,
    load_turbojpeg,
    process_image,
    unchanged_jpeg,
)
from heylook_llm.api.images.sources import ImageRef, read_ref
from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import CapabilityError, LimitExceeded
from heylook_llm.types import ImageData

log = logging.getLogger(__name__)


class ResizeFields(BaseModel):
    """Request extension fields (OpenAI, multipart and Ollama) applied to every image of the request."""

    resize_max: int | None = Field(default=None, ge=1, le=16384, description="Longest side in pixels; shrinks only")
    resize_width: int | None = Field(
        default=None, ge=1, le=16384, description="Width in pixels; alone it keeps the aspect ratio"
    )
    resize_height: int | None = Field(
        default=None, ge=1, le=16384, description="Height in pixels; with resize_width the exact size"
    )
    image_quality: int | None = Field(default=None, ge=1, le=100, description="JPEG quality (default 85)")
    preserve_alpha: bool = Field(default=False, description="Keep transparency (sent as PNG) instead of flattening")

    def resize_options(self) -> ResizeOptions:
        return ResizeOptions(
            max_side=self.resize_max,
            width=self.resize_width,
            height=self.resize_height,
            quality=self.image_quality,
            preserve_alpha=self.preserve_alpha,
        )


def require_vision(model_id: str, accepts_images: bool, refs: list[ImageRef]) -> None:
    """Refuse images for a model that cannot see them, before any image is read."""
    if not refs or accepts_images:
        return
    raise CapabilityError(
        f"model '{model_id}' does not accept images (a GGUF model needs mmproj_path, an MLX model vision: true); "
        f"{refs[0].label} is an image",
        param=refs[0].label,
    )


class ImagePipeline:
    """Reads, decodes and resizes images; one per app (holds the TurboJPEG handle and the decode bound)."""

    def __init__(self, limits: ImageSettings) -> None:
        self.limits = limits
        self._turbo: TurboJpegCodec | None = load_turbojpeg()
        self._decoding = asyncio.Semaphore(max(1, limits.decode_threads))

    @property
    def turbojpeg(self) -> bool:
        return self._turbo is not None

    async def prepare(
        self, model_id: str, accepts_images: bool, refs: list[ImageRef], options: ResizeOptions
    ) -> list[ImageData]:
        """ImageData for every reference, in order; domain errors name the image and the limit."""
        require_vision(model_id, accepts_images, refs)
        if not refs:
            return []
        limit = self.limits.max_images_per_request
        if len(refs) > limit:
            raise LimitExceeded(
                f"the request has {len(refs)} images; the limit is max_images_per_request={limit}", param="images"
            )
        started = time.perf_counter()
        images = await asyncio.gather(*(self._one(ref, options) for ref in refs))
        log.debug("prepared %d images in %.1f ms", len(images), (time.perf_counter() - started) * 1000)
        return list(images)

    async def _one(self, ref: ImageRef, options: ResizeOptions) -> ImageData:
        raw = await read_ref(ref, self.limits)
        # A JPEG that goes on unchanged is checked here: its header and end marker take about 30 us, and a round
        # trip through a worker thread about 200 us. Everything else is decoded off the event loop.
        unchanged = unchanged_jpeg(raw, ref.label, options, self.limits)
        if unchanged is not None:
            return unchanged
        async with self._decoding:
            return await asyncio.to_thread(process_image, raw, ref.label, options, self.limits, self._turbo)
