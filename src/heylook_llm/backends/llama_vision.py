"""llama.cpp vision through libmtmd: a projector (mmproj) GGUF beside the language model.

A prompt with images is rendered with a media marker where each image goes; `mtmd_tokenize` splits it into
text chunks and image chunks (each image preprocessed into its embedding tokens). The engine reads the text
chunks through its shared batch like any prompt and evaluates each image chunk into the sequence's slot with
`mtmd_helper_eval_chunk_single` (the CLIP encoder plus its own decode calls) once the text before it is in
the KV cache.

In prompt and cache token lists an image's positions hold a negative id derived from the image's bytes (and
which of its chunks it is): the prefix cache then matches an image only against the same image, so a
conversation that sends its image again each turn reuses the image's KV entries instead of encoding it again.

All methods run on the model's worker thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import mtmd_cpp

from heylook_llm.backends.image_decode import ResizeRule, decode_rgb, decode_scale, map_images, projector_rule
from heylook_llm.errors import GenerationFailed, InvalidRequest
from heylook_llm.gguf_header import GgufError, read_gguf_header
from heylook_llm.types import ImageData

log = logging.getLogger(__name__)

_native_log = logging.getLogger("heylook_llm.llama_cpp.native")
_GGML_ERROR = 4
_recent_errors: deque[str] = deque(maxlen=4)
"""libmtmd's latest error lines: its C API returns NULL or a status code, and says why only in its log."""


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_mtmd_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # libmtmd logs every tokenized part and encoded image at INFO; keep its warnings and errors, in our log.
    message = text.decode("utf-8", "replace").strip()
    if not message:
        return
    if level == _GGML_ERROR:
        _recent_errors.append(message)
    py_level = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}.get(level, logging.DEBUG)
    if _native_log.isEnabledFor(py_level):
        _native_log.log(py_level, "%s", message)


def _last_error(default: str) -> str:
    if not _recent_errors:
        return default
    # "mtmd_init_from_file: error: mismatch ... \nhint: ..." -> the part after the function name.
    message = _recent_errors[-1].split(": error: ", 1)[-1]
    return " ".join(message.split())


@dataclass(frozen=True, slots=True)
class ImageChunk:
    pointer: int
    """The `mtmd_input_chunk` inside its prompt's chunk list (owned by that list)."""
    start: int
    """Index of the image's first position in the prompt's `positions`."""
    n_tokens: int
    """Embedding tokens (KV cache cells) the image takes."""
    n_pos: int
    """Positions the image advances (fewer than n_tokens for M-RoPE models)."""


@dataclass(eq=False, slots=True)
class MediaPrompt:
    """A tokenized prompt with images: text token ids, and an image's negative id for each of its positions."""

    positions: list[int]
    images: deque[ImageChunk]
    token_count: int
    """Prompt tokens as reported to clients: text tokens plus every image's embedding tokens."""
    chunks: Any = field(default=None, repr=False)
    """The owning `mtmd_input_chunks` list; freed by `release`."""

    def prepend(self, tokens: list[int]) -> None:
        """Tokens evaluated before the prompt (an earlier conversation's context)."""
        self.positions[:0] = tokens
        self.token_count += len(tokens)
        self.images = deque(dataclasses.replace(image, start=image.start + len(tokens)) for image in self.images)

    def whole_images_before(self, reuse: int) -> int:
        """`reuse` cached positions, moved back to an image's start if they end inside it (an image is
        evaluated whole; its tokens may attend to each other both ways)."""
        for image in self.images:
            if image.start < reuse < image.start + image.n_pos:
                return image.start
        return reuse

    def drop_reused(self, reuse: int) -> None:
        """Forget the images whose positions all lie in the `reuse` positions already in the slot's cache."""
        while self.images and self.images[0].start + self.images[0].n_pos <= reuse:
            self.images.popleft()

    def release(self) -> None:
        if self.chunks:
            mtmd_cpp.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
        self.images.clear()


class VisionProjector:
    """An mtmd context: the projector GGUF loaded against one language model."""

    def __init__(self, path: Path, model: Any, *, n_threads: int, use_gpu: bool) -> None:
        mtmd_cpp.mtmd_log_set(_forward_mtmd_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_forward_mtmd_log, ctypes.c_void_p(0))
        # A marker of our own, unlike any text a user types, so that only our image slots split the prompt.
        self.marker = f"<__heylook_image_{secrets.token_hex(6)}__>"
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        params.media_marker = self.marker.encode()
        _recent_errors.clear()
        self._ctx: Any = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model, params)
        if not self._ctx:
            reason = _last_error("libmtmd could not load it")
            raise RuntimeError(f"the vision projector {path} does not load: {reason}")
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise RuntimeError(f"the projector {path} has no vision encoder (an audio-only projector?)")
        self._decode_rule = _projector_decode_rule(path)
        log.info("vision projector %s: JPEGs decoded for %s", path.name, self._decode_rule or "full size")

    def close(self) -> None:
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None

    def tokenize(self, text: str, images: list[ImageData], *, add_special: bool, workers: int) -> MediaPrompt:
        """Split `text` at its markers (one per image, in order) into text and image chunks; the images are read
        `workers` at a time."""
        bitmaps = map_images(
            lambda pair: self._bitmap(pair[1], pair[0]), list(enumerate(images)), workers, mtmd_cpp.mtmd_bitmap_free
        )
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            data = text.encode("utf-8")
            request = mtmd_cpp.mtmd_input_text(text=data, text_len=len(data), add_special=add_special)
            # Control tokens in the rendered template ("<|im_start|>") are meant as such, as in the text path.
            request.parse_special = True
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            status = mtmd_cpp.mtmd_tokenize(self._ctx, chunks, ctypes.byref(request), array, len(bitmaps))
        finally:
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)
        if status != 0:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            reason = "the images do not match the prompt's image slots" if status == 1 else "an image failed"
            raise InvalidRequest(f"the images could not be prepared for the model: {_last_error(reason)}")
        return _media_prompt(chunks)

    def _bitmap(self, image: ImageData, index: int) -> Any:
        if image.mime_type == "image/jpeg" and decode_scale(self._decode_rule, image.width, image.height) > 1:
            # A reduced decode (backends/image_decode.py) handed over as RGB pixels, instead of libmtmd's full
            # decode of the file with stb_image before its own resize to the projector's size.
            pixels = decode_rgb(image.data, self._decode_rule)
            raw = pixels.tobytes()
            buffer = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
            bitmap = mtmd_cpp.mtmd_bitmap_init(pixels.width, pixels.height, buffer)
        else:
            buffer = (ctypes.c_uint8 * len(image.data)).from_buffer_copy(image.data)
            bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(image.data), False)
        if not bitmap:
            raise InvalidRequest(f"image {index + 1} of the request could not be read by llama.cpp")
        # The chunks of this image carry the id: it names the image's positions in the prefix cache.
        mtmd_cpp.mtmd_bitmap_set_id(bitmap, hashlib.sha256(image.data).hexdigest().encode())
        return bitmap

    def evaluate(self, context: Any, image: ImageChunk, n_past: int, seq_id: int, n_batch: int) -> int:
        """Encode `image` and decode its embeddings into `seq_id` from position `n_past`; the next position."""
        new_n_past = llama_cpp.llama_pos(0)
        _recent_errors.clear()
        status = mtmd_cpp.mtmd_helper_eval_chunk_single(
            self._ctx, context, image.pointer, n_past, seq_id, n_batch, False, ctypes.byref(new_n_past)
        )
        if status != 0:
            raise GenerationFailed(f"llama.cpp could not evaluate an image: {_last_error(f'status {status}')}")
        return int(new_n_past.value)


def _projector_decode_rule(path: Path) -> ResizeRule | None:
    try:
        header = read_gguf_header(path)
    except GgufError as exc:
        log.warning("could not read the projector's header (%s); images are decoded whole by libmtmd", exc)
        return None
    # Arrays too long to be kept are still named: a projector with image_grid_pinpoints must be seen as one.
    return projector_rule({**header.metadata, **dict.fromkeys(header.skipped_arrays)})


def _position_id(chunk: Any, seen: dict[bytes, int]) -> int:
    """A negative id for every position of this image chunk: the same image's n-th chunk gets the same id in
    every prompt. Ids are 60 bits of a hash, so different images do not collide in practice."""
    image_id = mtmd_cpp.mtmd_input_chunk_get_id(chunk)
    if not image_id:
        return -1 - secrets.randbits(60)  # no id: an id no other prompt has
    ordinal = seen.get(image_id, 0)
    seen[image_id] = ordinal + 1
    digest = hashlib.sha256(image_id + b":" + str(ordinal).encode()).digest()
    return -1 - (int.from_bytes(digest[:8], "big") >> 4)


def _media_prompt(chunks: Any) -> MediaPrompt:
    positions: list[int] = []
    images: deque[ImageChunk] = deque()
    seen: dict[bytes, int] = {}
    token_count = 0
    for index in range(int(mtmd_cpp.mtmd_input_chunks_size(chunks))):
        chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, index)
        kind = int(mtmd_cpp.mtmd_input_chunk_get_type(chunk))
        if kind == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
            count = ctypes.c_size_t(0)
            tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            text_tokens = [int(t) for t in tokens[: count.value]] if count.value else []
            positions.extend(text_tokens)
            token_count += len(text_tokens)
        elif kind == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            image = ImageChunk(
                pointer=int(chunk),
                start=len(positions),
                n_tokens=int(mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)),
                n_pos=int(mtmd_cpp.mtmd_input_chunk_get_n_pos(chunk)),
            )
            images.append(image)
            positions.extend([_position_id(chunk, seen)] * image.n_pos)
            token_count += image.n_tokens
        else:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            raise InvalidRequest("the prompt holds media other than images, which this server does not take")
    return MediaPrompt(positions=positions, images=images, token_count=token_count, chunks=chunks)
