"""Images in requests: read (data URLs, base64, uploads, http(s) with limits), check, decode, resize, re-encode.

Backend-neutral: the dialects hand `ImageRef`s to the app's `ImagePipeline` and put the resulting `ImageData`
on the neutral chat messages. See docs/vision.md.
"""

from heylook_llm.api.images.codec import ResizeOptions, process_image
from heylook_llm.api.images.pipeline import ImagePipeline, ResizeFields, require_vision
from heylook_llm.api.images.sources import ImageRef

__all__ = ["ImagePipeline", "ImageRef", "ResizeFields", "ResizeOptions", "process_image", "require_vision"]
