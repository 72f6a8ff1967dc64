"""Pieces of the MLX backend that do not need a loaded model's state: sampling, logits processors, KV cache
construction and checks, token decoding, facts read from config.json."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import maybe_quantize_kv_cache
from mlx_lm.models.cache import (
    KVCache,
    QuantizedKVCache,
    RotatingKVCache,
    can_trim_prompt_cache,
    make_prompt_cache,
)
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from heylook_llm.config.registry import MLXConfig
from heylook_llm.errors import InvalidRequest, ModelLoadError
from heylook_llm.types import SamplingParams

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 4096
"""Used when neither config.json nor the tokenizer says how long the model's context is."""

Sampler = Callable[[Any], Any]
LogitsProcessor = Callable[[Any, Any], Any]
CacheFactory = Callable[[], list[Any]]


class SeededSampler:
    """An mlx-lm sampler whose draws depend only on the request's seed, so a seed gives the same tokens every time.

    mlx-lm's samplers draw from MLX's random state, which is per thread and shared by everything that runs on
    it. Reseeding before each draw from (seed, draw number) keeps this request's sequence its own even when
    several sequences take turns on one worker thread.
    """

    def __init__(self, sampler: Sampler, seed: int) -> None:
        self._sampler = sampler
        self._seed = seed
        self._draws = 0

    def __call__(self, logprobs: Any) -> Any:
        mx.random.seed((self._seed * _SEED_STRIDE + self._draws) % 2**64)
        self._draws += 1
        return self._sampler(logprobs)


_SEED_STRIDE = 0x9E3779B97F4A7C15  # an odd 64-bit constant: nearby seeds land far apart, sharing no draws


def build_sampler(params: SamplingParams, vocab_size: int, seed: int) -> Sampler:
    """mlx-lm's sampler for these values; temperature 0 is greedy (argmax), which needs no random key."""
    if params.greedy:
        sampler: Sampler = make_sampler(temp=0.0)
        return sampler
    # mlx-lm rejects top_k >= vocabulary size; such a top_k keeps every token, like 0 does.
    top_k = params.top_k if 0 < params.top_k < vocab_size else 0
    inner = make_sampler(temp=params.temperature, top_p=params.top_p, min_p=max(params.min_p, 0.0), top_k=top_k)
    return SeededSampler(inner, seed)


@dataclass(slots=True)
class LogitsSetup:
    bias: list[LogitsProcessor] = field(default_factory=list)
    """logit_bias, which looks at no earlier tokens."""
    penalties: list[LogitsProcessor] = field(default_factory=list)
    """Repetition, presence and frequency penalties over the last `penalty_context` tokens."""
    penalty_context: int = 0
    grammar: Any = None
    """The output constraint's processor (a GrammarProcessor), applied last so that no bias can undo it."""
    capture: Any = None
    """With logprobs: a LogprobCapture (mlx_logits.py), first, so that it sees the raw logits."""
    reasoning: Any = None
    """A ReasoningProcessor (mlx_logits.py) holding the grammar processor: last, in the grammar's place."""
    logprobs: int | None = None
    """Alternatives to report with each token's log probability; None: logprobs not asked."""
    reasoning_open: bool = False
    """The prompt ends inside the reasoning section (said on the first chunk)."""

    def first(self) -> list[LogitsProcessor]:
        return [self.capture] if self.capture is not None else []

    def last(self) -> list[LogitsProcessor]:
        if self.reasoning is not None:
            return [self.reasoning]
        return [self.grammar] if self.grammar is not None else []

    def all(self) -> list[LogitsProcessor]:
        return [*self.first(), *self.bias, *self.penalties, *self.last()]


def build_logits_processors(params: SamplingParams, vocab_size: int, context_length: int) -> LogitsSetup:
    """mlx-lm's logits processors for these values; raises InvalidRequest for a token outside the vocabulary."""
    setup = LogitsSetup()
    if params.logit_bias:
        bias: dict[int, float] = {}
        for token, value in params.logit_bias:
            if not 0 <= token < vocab_size:
                raise InvalidRequest(
                    f"logit_bias token id {token} is outside the vocabulary (0..{vocab_size - 1})", param="logit_bias"
                )
            # OpenAI's -100/100 mean ban/force; -inf keeps a banned token out even after other processors run.
            bias[token] = -math.inf if value <= -100 else value
        setup.bias = list(make_logits_processors(logit_bias=bias))
    # As in llama.cpp: repeat_last_n 0 turns the penalties off and -1 means the whole context.
    context = context_length if params.repeat_last_n < 0 else params.repeat_last_n
    if context == 0:
        return setup
    setup.penalty_context = context
    setup.penalties = list(
        make_logits_processors(
            repetition_penalty=params.repeat_penalty if params.repeat_penalty != 1.0 else None,
            repetition_context_size=context,
            presence_penalty=params.presence_penalty or None,
            presence_context_size=context,
            frequency_penalty=params.frequency_penalty or None,
            frequency_context_size=context,
        )
    )
    return setup


def with_history(processor: LogitsProcessor, history: Any) -> LogitsProcessor:
    """A processor that also sees `history`, tokens of a reused cache that mlx-lm was not given this time."""

    def apply(tokens: Any, logits: Any) -> Any:
        return processor(mx.concatenate([history, tokens.astype(history.dtype)]), logits)

    return apply


class TokenDecoder:
    """Bytes for each generated token: a table lookup, or mlx-lm's streaming detokenizer where there is no table."""

    def __init__(self, table: list[bytes] | None, tokenizer: Any) -> None:
        self._table = table
        self._detokenizer = tokenizer.detokenizer if table is None else None

    def feed(self, token: int) -> bytes:
        table = self._table
        if table is not None:
            return table[token] if token < len(table) else b""
        detokenizer = self._detokenizer
        assert detokenizer is not None
        detokenizer.add_token(token)
        return str(detokenizer.last_segment).encode("utf-8")

    def flush(self) -> bytes:
        if self._detokenizer is None:
            return b""
        self._detokenizer.finalize()
        return str(self._detokenizer.last_segment).encode("utf-8")


def _sub_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else {}


def model_vocab_size(config: dict[str, Any], fallback: int) -> int:
    """Rows of the output layer (may exceed the tokenizer's size when the vocabulary is padded)."""
    value = config.get("vocab_size") or _sub_config(config).get("vocab_size")
    return int(value) if isinstance(value, int) and value > 0 else fallback


def model_context_length(config: dict[str, Any], tokenizer: Any) -> int:
    text = _sub_config(config)
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions"):
        value = config.get(key) or text.get(key)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:  # transformers uses a huge number for "unknown"
        return limit
    log.warning("config.json does not give a context length; assuming %d tokens", DEFAULT_CONTEXT_LENGTH)
    return DEFAULT_CONTEXT_LENGTH


def cache_factory(model_id: str, cfg: MLXConfig, model: Any, draft: Any | None) -> CacheFactory:
    """A function making fresh KV caches as `cfg` asks (the draft model's appended), checked once here.

    Raises ModelLoadError for settings the installed mlx-lm cannot honour with this model.
    """

    def fail(reason: str) -> ModelLoadError:
        return ModelLoadError(model_id, reason)

    max_kv_size = cfg.max_kv_size if cfg.cache_type == "rotating" else None
    if max_kv_size is not None and draft is not None:
        raise fail(
            "draft_model_path cannot be combined with cache_type rotating: speculative decoding rewinds the "
            "cache, and mlx-lm cannot rewind a rotating cache once it has wrapped around"
        )

    def new_cache() -> list[Any]:
        cache = list(make_prompt_cache(model))
        if max_kv_size is not None:
            cache = [_bounded(c, max_kv_size) for c in cache]
        if draft is not None:
            cache += make_prompt_cache(draft)
        return cache

    sample = new_cache()
    if max_kv_size is not None and not any(isinstance(c, RotatingKVCache) for c in sample):
        kinds = sorted({type(c).__name__ for c in sample})
        raise fail(f"this model keeps no growing KV cache for max_kv_size to bound ({', '.join(kinds)})")
    if draft is not None and not can_trim_prompt_cache(sample):
        kinds = sorted({type(c).__name__ for c in sample if not c.is_trimmable()})
        raise fail(f"speculative decoding needs a KV cache that can be rewound; this model uses {', '.join(kinds)}")
    if cfg.cache_type == "quantized":
        _check_quantized_cache(model_id, cfg, model)
        if draft is not None:
            _check_quantized_cache(model_id, cfg, draft, what="the draft model's")
    return new_cache


ATTENTION_SINK_TOKENS = 4
"""A rotating cache keeps the first tokens of the sequence forever, as mlx-lm does: attention leans on them."""


def _bounded(cache: Any, max_kv_size: int) -> Any:
    """A layer's cache bounded to `max_kv_size` tokens; layers with a bounded or fixed-size cache keep theirs.

    mlx-lm's `make_prompt_cache` ignores max_kv_size for models that build their own caches (llama does,
    for its optional sliding-window layers), so the growing caches are replaced here.
    """
    if type(cache) is KVCache:
        return RotatingKVCache(max_size=max_kv_size, keep=ATTENTION_SINK_TOKENS)  # type: ignore[no-untyped-call]
    return cache


def _check_quantized_cache(model_id: str, cfg: MLXConfig, model: Any, what: str = "the model's") -> None:
    """Run two tokens through a cache quantized from the first token on, as generation will do."""
    bits, group = cfg.kv_bits, cfg.kv_group_size
    cache = list(make_prompt_cache(model))
    probe = mx.array([[0]])
    try:
        model(probe, cache=cache)
        maybe_quantize_kv_cache(  # type: ignore[no-untyped-call]  # mlx-lm leaves this one unannotated
            cache, quantized_kv_start=0, kv_group_size=group, kv_bits=bits
        )
        mx.eval(model(probe, cache=cache))
    except Exception as exc:  # mlx raises ValueError / NotImplementedError / RuntimeError for these
        raise ModelLoadError(
            model_id,
            f"the installed mlx cannot quantize {what} KV cache with kv_bits={bits}, kv_group_size={group}: {exc}",
        ) from exc
    left = sorted({type(c).__name__ for c in cache if not isinstance(c, QuantizedKVCache)})
    if left:
        raise ModelLoadError(
            model_id, f"cache_type quantized: mlx-lm cannot quantize {what} {', '.join(left)} layers' caches"
        )
