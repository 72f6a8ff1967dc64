"""MLX vision backend: mlx-vlm model folders (`vision: true`), images and text, on Apple Silicon or Linux CPU.

The chat template gets each message's content as Hugging Face processors expect it from a vision model: a list
of parts, one `{"type": "image"}` per image before `{"type": "text", ...}`. The model's own processor turns the
rendered prompt and the images into token ids (expanding each image token to the image's patch tokens) and
pixel values; mlx-vlm's `stream_generate` runs the vision tower and the language model. Sampling, logits
processors and text assembly are the ones of the MLX text backend, so both answer alike.

The KV cache of the last finished request is kept for the next one (mlx-vlm's `PromptCacheState`): a chat's next
turn evaluates only what follows the part of its prompt the cache holds, and its images go through the vision
tower once. Image tokens are the same ids for any image, so the cache is reused only when the request's images
are the same pixels as those of the cached request (a hash of the processor's output); otherwise, and after any
request that did not run to its own end, the next request starts from an empty cache.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import random
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_vlm.generate import stream_generate
from mlx_vlm.generate.common import PromptCacheState
from mlx_vlm.utils import load as load_vision_model
from PIL import Image

from heylook_llm.backends.base import GeneratorBackend
from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.image_decode import ResizeRule, decode_rgb, map_images, processor_rule
from heylook_llm.backends.mlx_support import (
    LogitsProcessor,
    TokenDecoder,
    build_logits_processors,
    build_sampler,
    model_context_length,
    model_vocab_size,
)
from heylook_llm.backends.native_memory import release_free_heap
from heylook_llm.backends.text import StopMatcher, Utf8Assembler
from heylook_llm.backends.token_bytes import token_byte_table
from heylook_llm.backends.tokens import PromptLimit
from heylook_llm.config.chat_formats import CHAT_FORMATS
from heylook_llm.config.registry import MLXConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError
from heylook_llm.types import ChatMessage, Feature, FinishReason, GenerationChunk, GenerationRequest, GenerationStats

log = logging.getLogger(__name__)

_PREPARED_KEYS = ("input_ids", "pixel_values", "attention_mask")


class MLXVisionBackend(GeneratorBackend):
    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        assert isinstance(entry.config, MLXConfig)
        self.config: MLXConfig = entry.config
        self._model: Any = None
        self._processor: Any = None
        self._template: ChatTemplate | None = None
        self._byte_table: list[bytes] | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._decode_rule: ResizeRule | None = None
        self._turn_cache: PromptCacheState | None = None
        """The KV cache and tokens of the last request that ran to its end; None after any other end."""
        self._turn_images = ""
        """`_images_key` of that request."""

    def load(self) -> None:
        cfg = self.config
        if cfg.draft_model_path is not None or cfg.cache_type != "standard":
            raise ModelLoadError(
                self.entry.id, "vision models take neither draft_model_path nor a cache_type other than standard"
            )
        config_file = cfg.model_path / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(
                self.entry.id, f"model_path {cfg.model_path} is not an MLX model folder (no config.json there)"
            )
        try:
            model, processor = load_vision_model(str(cfg.model_path))
            config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
        except Exception as exc:  # mlx-vlm raises ValueError, KeyError, OSError... for what it cannot read
            raise ModelLoadError(self.entry.id, f"mlx-vlm could not load {cfg.model_path}: {exc}") from exc
        tokenizer: Any = getattr(processor, "tokenizer", processor)
        self._model, self._processor = model, processor
        # JPEGs are decoded only as large as this processor resizes them (backends/image_decode.py).
        self._decode_rule = processor_rule(getattr(processor, "image_processor", None))
        log.info("vision model '%s': images decoded for %s", self.entry.id, self._decode_rule or "full size")
        self._vocab_size = model_vocab_size(config, len(tokenizer))
        self._eos_ids = _eos_ids(config, tokenizer)
        self._byte_table = token_byte_table(tokenizer)
        self._template = self._chat_template(processor, tokenizer)
        self.facts.context_length = model_context_length(config, tokenizer)
        self.facts.size_bytes = sum(p.stat().st_size for p in cfg.model_path.glob("*.safetensors"))
        on_gpu = mx.default_device().type == mx.DeviceType.gpu
        self.facts.accelerator_bytes = self.facts.size_bytes if on_gpu else 0
        self.facts.chat_template = self._template.source
        self.features = frozenset({Feature.CHAT, Feature.COMPLETION, Feature.IMAGES})
        arch = str(config.get("model_type", "unknown"))
        self.facts.metadata = {
            "general.architecture": arch,
            f"{arch}.context_length": str(self.facts.context_length),
            "mlx.vision": "true",
        }

    def _chat_template(self, processor: Any, tokenizer: Any) -> ChatTemplate:
        source = getattr(processor, "chat_template", None) or tokenizer.chat_template
        if isinstance(source, dict):
            source = source.get("default")
        if not isinstance(source, str) or not source:
            log.warning("vision model '%s' has no chat template; chat requests use chatml", self.entry.id)
            source = CHAT_FORMATS["chatml"]
        try:
            return ChatTemplate(source, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"the chat template does not compile: {exc}") from exc

    # --- generation -----------------------------------------------------------------------------
    def _prompt(self, request: GenerationRequest) -> tuple[str, list[Image.Image]]:
        # Text longer than the context window could hold is refused before processing (backends/tokens.py).
        limit = PromptLimit(self.facts.context_length, self.settings.limits.prompt_bytes_per_token)
        if request.messages is None:
            limit.check(request.prompt or "")
            return request.prompt or "", []
        assert self._template is not None
        rendered = [{"role": message.role, "content": _content_parts(message)} for message in request.messages]
        text = self._template.render_dicts(rendered, limit=limit)
        limit.check(text)
        encoded = [image.data for message in request.messages for image in message.images]
        workers = self.settings.images.decode_threads
        return text, map_images(lambda data: decode_rgb(data, self._decode_rule), encoded, workers)

    def _inputs(self, prompt: str, images: list[Image.Image]) -> dict[str, Any]:
        try:
            prepared = self._processor(text=[prompt], images=images or None)
        except Exception as exc:  # processors raise ValueError/TypeError for prompts and images that do not fit
            raise InvalidRequest(f"the model's processor could not prepare the request: {exc}") from exc
        return {key: prepared[key] for key in prepared}

    def count_tokens(self, request: GenerationRequest) -> int:
        prompt, images = self._prompt(request)
        return int(np.asarray(self._inputs(prompt, images)["input_ids"]).size)

    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        params = request.sampling
        prompt, images = self._prompt(request)
        inputs = self._inputs(prompt, images)
        tokens = [int(t) for t in np.asarray(inputs["input_ids"]).reshape(-1)]
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        n_ctx = self.facts.context_length
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(len(tokens), n_ctx)
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        sampler = build_sampler(params, self._vocab_size, seed)
        processors = build_logits_processors(params, self._vocab_size, n_ctx)
        budget = min(params.max_tokens, n_ctx - len(tokens))
        # Penalties count the prompt, as in the text backend and llama.cpp (see `_seeing_the_prompt`).
        penalties = processors.penalties
        if penalties:
            prompt_tail = mx.array(tokens[-processors.penalty_context :], dtype=mx.int32)
            penalties = [_seeing_the_prompt(p, prompt_tail) for p in penalties]
        extra = {k: _as_mx(v) for k, v in inputs.items() if k not in _PREPARED_KEYS}
        pixels = inputs.get("pixel_values")
        mask = inputs.get("attention_mask")
        images_key = _images_key(inputs)
        # The cache is handed to this request alone; it comes back only if the request runs to its end.
        reusable = self._turn_cache if self._turn_images == images_key else None
        self._turn_cache = None
        turn_cache = reusable if reusable is not None else PromptCacheState()  # type: ignore[no-untyped-call]
        stream = stream_generate(
            self._model,
            self._processor,
            "",
            input_ids=mx.array(tokens)[None],
            pixel_values=_as_mx(pixels) if pixels is not None else None,
            mask=_as_mx(mask) if mask is not None else None,
            max_tokens=budget,
            sampler=sampler,
            logits_processors=processors.bias + penalties,
            prompt_cache_state=turn_cache,
            **extra,
        )
        return self._generate(request, tokens, budget, stream, _TurnCache(turn_cache, images_key))

    def _generate(
        self, request: GenerationRequest, tokens: list[int], budget: int, stream: Iterator[Any], turn: _TurnCache
    ) -> Generator[GenerationChunk, None, None]:
        params = request.sampling
        started = time.perf_counter()
        first_token_at = started
        decoder = TokenDecoder(self._byte_table, self._processor)
        assembler = Utf8Assembler()
        stops = StopMatcher(params.stop)
        produced = 0
        cached = 0
        finish = FinishReason.STOP
        # mlx-vlm stores the turn's cache only once its generator has run to the end; where it has only its
        # summary left (its own end token, or the budget), the generator is drained for it.
        drain = False
        try:
            for result in stream:
                cached = result.cached_tokens
                # mlx-vlm ends with a summary result that repeats the last token: the budget check stops first.
                if result.token is None:
                    continue
                token = int(result.token)
                if produced == 0:
                    first_token_at = time.perf_counter()
                if token in self._eos_ids:
                    drain = result.finish_reason is not None
                    break
                produced += 1
                text = stops.feed(assembler.feed(decoder.feed(token)))
                if stops.stopped:
                    if text:
                        yield GenerationChunk(text, token_count=1)
                    break
                if produced >= budget:
                    finish = FinishReason.LENGTH
                    drain = True
                    text += stops.feed(assembler.feed(decoder.flush()) + assembler.flush()) + stops.flush()
                    if text:
                        yield GenerationChunk(text, token_count=1)
                    break
                yield GenerationChunk(text, token_count=1)
            if drain and _ran_to_end(stream):
                self._turn_cache, self._turn_images = turn.state, turn.images_key
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if finish is FinishReason.STOP and not stops.stopped:
            tail = stops.feed(assembler.feed(decoder.flush()) + assembler.flush()) + stops.flush()
            if tail:
                yield GenerationChunk(tail)
        ended = time.perf_counter()
        stats = GenerationStats(
            prompt_tokens=len(tokens),
            cached_prompt_tokens=cached,
            completion_tokens=produced,
            prompt_eval_seconds=first_token_at - started,
            generation_seconds=ended - first_token_at,
        )
        matched = stops.matched if finish is FinishReason.STOP else None
        yield GenerationChunk("", finish_reason=finish, stats=stats, stop_sequence=matched)

    def unload(self) -> None:
        self._model = None
        self._processor = None
        self._template = None
        self._turn_cache = None
        gc.collect()
        mx.clear_cache()
        release_free_heap()


@dataclass(slots=True)
class _TurnCache:
    state: PromptCacheState
    images_key: str


def _images_key(inputs: dict[str, Any]) -> str:
    """A hash of what the processor made of a request's images ("" for none): a cached prefix is reused only for
    the same images, since every image is the same run of image-token ids in the prompt."""
    digest = hashlib.blake2b(digest_size=16)
    found = False
    for name in sorted(inputs):
        if name == "pixel_values" or name.startswith("image_"):
            array = np.ascontiguousarray(np.asarray(inputs[name]))
            digest.update(f"{name}{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
            found = True
    return digest.hexdigest() if found else ""


def _seeing_the_prompt(processor: LogitsProcessor, prompt: Any) -> LogitsProcessor:
    """`processor` given the whole `prompt` and the tokens generated so far.

    mlx-vlm hands its processors the part of the prompt it evaluates last (its last token after a chunked
    prefill, all of it otherwise, the new part after a reused prefix), then one more generated token per step: at
    the k-th call, the last k tokens it passes are the generated ones."""
    calls = 0

    def apply(tokens: Any, logits: Any) -> Any:
        nonlocal calls
        generated = tokens[tokens.size - calls :] if calls else tokens[:0]
        calls += 1
        return processor(mx.concatenate([prompt, generated.astype(prompt.dtype)]), logits)

    return apply


def _ran_to_end(stream: Iterator[Any]) -> bool:
    """Read what is left of mlx-vlm's stream if that is only its summary; False (the stream is left to be closed)
    where it would have generated another token."""
    return all(result.finish_reason is not None for result in stream)


def _content_parts(message: ChatMessage) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in message.images]
    parts.append({"type": "text", "text": message.content})
    return parts


def _as_mx(value: Any) -> Any:
    return value if isinstance(value, mx.array) else mx.array(value)


def _eos_ids(config: dict[str, Any], tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (config.get("eos_token_id"), (config.get("text_config") or {}).get("eos_token_id")):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(int(t) for t in source)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
