"""MLX backends: mlx-lm model folders (config.json, *.safetensors, tokenizer files), on Apple Silicon and on
Linux CPU with `mlx[cpu]`.

`MLXBatchedBackend` runs several requests at once through mlx-lm's own `BatchGenerator` (`mlx_batch.py`);
`MLXBackend` runs one at a time through `generate_step` / `speculative_generate_step`, for the settings mlx-lm
cannot batch (a draft model, rotating or quantized caches) or `parallel: 1`. `backends.mlx_batched` picks one
from the model's config. Both load the model alike (`mlx_common.py`) and take samplers and logits processors from
mlx-lm's factories; text is assembled from token bytes with the same UTF-8 and stop-string handling as the
llama.cpp backend, so all backends answer alike. mlx is imported here, at module import, so that a machine
without it gets the backends table's clear "cannot be imported" load error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step, speculative_generate_step
from mlx_lm.models.cache import QuantizedKVCache, can_trim_prompt_cache
from mlx_lm.utils import load_model

from heylook_llm.backends import mlx_batched
from heylook_llm.backends.base import GeneratorBackend
from heylook_llm.backends.mlx_batch import BatchEngine, batchable_cache
from heylook_llm.backends.mlx_common import MLXModelBase
from heylook_llm.backends.mlx_logits import token_chunk
from heylook_llm.backends.mlx_support import (
    CacheFactory,
    LogitsSetup,
    Sampler,
    TokenDecoder,
    cache_factory,
    model_vocab_size,
    with_history,
)
from heylook_llm.backends.text import StopMatcher, Utf8Assembler
from heylook_llm.backends.tokens import common_prefix
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import ModelLoadError
from heylook_llm.types import FinishReason, GenerationChunk, GenerationRequest, GenerationStats

log = logging.getLogger(__name__)


class MLXBackend(MLXModelBase, GeneratorBackend):
    """One sequence at a time, with speculative decoding, rotating or quantized caches, and the last
    generation's KV cache reused when the next prompt shares a prefix with it."""

    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        self._draft: Any = None
        # The KV cache of the last generation and the tokens it holds, reused when the next prompt shares a prefix.
        self._cache: list[Any] | None = None
        self._cache_tokens: list[int] = []

    @classmethod
    def sharing(cls, loaded: MLXModelBase) -> MLXBackend:
        """One sequence at a time on a model another MLX backend has loaded (without a draft model)."""
        backend = cls(loaded.entry, loaded.settings)
        backend._share_loaded(loaded)
        return backend

    # --- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        super().load()
        cfg = self.config
        if cfg.parallel > 1 and not mlx_batched(cfg):
            # The config refuses an explicit parallel > 1 with these; the default falls back to one at a time.
            why = "speculative decoding" if self._draft is not None else f"cache_type {cfg.cache_type}"
            log.info("model '%s' runs one request at a time: mlx-lm cannot batch %s", self.entry.id, why)

    def _cache_factory(self) -> CacheFactory:
        if self.config.draft_model_path is not None:
            self._draft = self._load_draft(self.config.draft_model_path)
        return cache_factory(self.entry.id, self.config, self._model, self._draft)

    def _load_draft(self, path: Path) -> Any:
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                self.entry.id, f"draft_model_path {path} is not an MLX model folder (no config.json there)"
            )
        try:
            draft, config = load_model(path)
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"mlx-lm could not load the draft model {path}: {exc}") from exc
        draft_vocab = model_vocab_size(config, 0)
        if draft_vocab != self._vocab_size:
            raise ModelLoadError(
                self.entry.id,
                f"the draft model's vocabulary ({draft_vocab} tokens) differs from the model's ({self._vocab_size}); "
                "speculative decoding needs a draft model with the same tokenizer",
            )
        return draft

    # --- generation -----------------------------------------------------------------------------
    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        tokens, sampler, processors = self._prepare(request)
        return self._generate(request, tokens, sampler, processors)

    def _token_stream(
        self,
        tokens: list[int],
        budget: int,
        sampler: Sampler,
        processors: LogitsSetup,
    ) -> tuple[Iterator[tuple[Any, ...]], list[Any], int]:
        """mlx-lm's token generator for this prompt, the KV cache it fills, and how many prompt tokens it reused."""
        cfg = self.config
        assert self._new_cache is not None
        quantize: dict[str, Any] = {}
        if cfg.cache_type == "quantized":
            quantize = {
                "kv_bits": cfg.kv_bits,
                "kv_group_size": cfg.kv_group_size,
                "quantized_kv_start": cfg.quantized_kv_start,
            }
        stream: Iterator[tuple[Any, ...]]
        if self._draft is not None:
            cache = self._new_cache()
            stream = speculative_generate_step(
                mx.array(tokens),
                self._model,
                self._draft,
                num_draft_tokens=cfg.num_draft_tokens,
                max_tokens=budget,
                sampler=sampler,
                logits_processors=processors.all(),
                prompt_cache=cache,
                **quantize,
            )
            return stream, cache, 0
        cache, cached = self._reusable_cache(tokens)
        penalties = processors.penalties
        if cached and penalties:
            # mlx-lm only sees the tokens it is given, so penalties get the reused prefix's tail back.
            history = mx.array(tokens[max(0, cached - processors.penalty_context) : cached])
            penalties = [with_history(p, history) for p in penalties]
        stream = generate_step(
            mx.array(tokens[cached:]),
            self._model,
            max_tokens=budget,
            sampler=sampler,
            logits_processors=[*processors.first(), *processors.bias, *penalties, *processors.last()],
            prompt_cache=cache,
            **quantize,
        )
        return stream, cache, cached

    def _reusable_cache(self, tokens: list[int]) -> tuple[list[Any], int]:
        """The last generation's cache trimmed to the prefix it shares with `tokens`, or a fresh cache."""
        assert self._new_cache is not None
        cache, held = self._cache, self._cache_tokens
        # Taken out of the backend while in use: a failed generation must not leave a half-written cache behind.
        self._cache, self._cache_tokens = None, []
        if cache is not None and can_trim_prompt_cache(cache):
            common = min(common_prefix(held, tokens), len(tokens) - 1)
            excess = len(held) - common
            # A cache quantized past quantized_kv_start cannot serve a prefix shorter than that: a fresh request
            # would still hold those tokens in full precision.
            quantized_early = common < self.config.quantized_kv_start and any(
                isinstance(c, QuantizedKVCache) for c in cache
            )
            if common > 0 and not quantized_early and min(c.trim(excess) for c in cache) == excess:
                return cache, common
        return self._new_cache(), 0

    def _keep_cache(self, cache: list[Any], history: list[int]) -> None:
        if self._draft is not None or not cache or not can_trim_prompt_cache(cache):
            return
        offset = int(cache[0].offset)
        if offset <= len(history):
            self._cache, self._cache_tokens = cache, history[:offset]

    def _generate(
        self, request: GenerationRequest, tokens: list[int], sampler: Sampler, processors: LogitsSetup
    ) -> Generator[GenerationChunk, None, None]:
        params = request.sampling
        n_ctx = self.facts.context_length
        budget = min(params.max_tokens, n_ctx - len(tokens))
        started = time.perf_counter()
        stream, cache, cached = self._token_stream(tokens, budget, sampler, processors)
        first_token_at = started
        decoder = TokenDecoder(self._byte_table, self._tokenizer)
        assembler = Utf8Assembler()
        stops = StopMatcher(params.stop)
        eos_ids = self._eos_ids
        received: list[int] = []
        produced = 0
        drafted = 0
        finish = FinishReason.LENGTH
        keep = False
        capture = processors.capture
        try:
            for item in stream:
                if processors.grammar is not None and processors.grammar.failed is not None:
                    raise processors.grammar.failed
                token = int(item[0])
                # Taken for every sampled token, the end of sequence included, to stay in step with the captures.
                logprobs = capture.take() if capture is not None else None
                received.append(token)
                if produced == 0:
                    first_token_at = time.perf_counter()
                if token in eos_ids:
                    finish = FinishReason.STOP
                    break
                produced += 1
                if len(item) > 2 and item[2]:
                    drafted += 1
                text = stops.feed(assembler.feed(decoder.feed(token)))
                opened = processors.reasoning_open and produced == 1
                chunk = token_chunk(text, token, logprobs, processors.logprobs, self.token_piece, reasoning_open=opened)
                if stops.stopped:
                    finish = FinishReason.STOP
                    if text or chunk.logprobs:
                        yield chunk
                    break
                if produced >= budget:
                    chunk.text += stops.feed(assembler.feed(decoder.flush()) + assembler.flush()) + stops.flush()
                    if stops.stopped:  # the held-back text completed a stop string
                        finish = FinishReason.STOP
                    if chunk.text or chunk.logprobs:
                        yield chunk
                    break
                yield chunk
            keep = True
        except GeneratorExit:
            keep = True  # cancelled between tokens: the cache is consistent
            raise
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if keep:
                self._keep_cache(cache, tokens + received)
        if finish is FinishReason.STOP and not stops.stopped:
            tail = stops.feed(assembler.feed(decoder.flush()) + assembler.flush()) + stops.flush()
            if tail:
                yield GenerationChunk(tail)
        ended = time.perf_counter()
        if self._draft is not None:
            log.info(
                "request %s on '%s': %d of %d generated tokens came from the draft model",
                request.request_id or "-",
                self.entry.id,
                drafted,
                produced,
            )
        stats = GenerationStats(
            prompt_tokens=len(tokens),
            completion_tokens=produced,
            cached_prompt_tokens=cached,
            prompt_eval_seconds=first_token_at - started,
            generation_seconds=ended - first_token_at,
        )
        # The tokens a later request can continue from: the prompt and what was produced, without the EOS token.
        context = [*tokens, *received[:produced]] if request.return_tokens else None
        matched = stops.matched if finish is FinishReason.STOP else None
        yield GenerationChunk("", finish_reason=finish, stats=stats, context_tokens=context, stop_sequence=matched)

    # --- unloading ------------------------------------------------------------------------------
    def unload(self) -> None:
        self._cache, self._cache_tokens = None, []
        self._draft = None
        super().unload()


class MLXBatchedBackend(MLXModelBase):
    """Several sequences at once through mlx-lm's BatchGenerator (`BatchEngine`), for the configs `mlx_batched`
    accepts; each step advances every open sequence by one token."""

    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        assert mlx_batched(self.config), "a config that mlx-lm cannot batch runs on MLXBackend"
        self._batch: BatchEngine | None = None
        self._alone: MLXBackend | None = None
        """Set instead of `_batch` when the loaded model's KV cache turns out to be one mlx-lm cannot batch."""

    def load(self) -> None:
        super().load()
        assert self._new_cache is not None
        sample_cache = self._new_cache()
        # Known only now that the model is built: the kinds of cache its layers keep.
        if not batchable_cache(sample_cache):
            kinds = sorted({type(c).__name__ for c in sample_cache})
            log.info("model '%s' runs one request at a time: mlx-lm cannot batch %s", self.entry.id, ", ".join(kinds))
            self._alone = MLXBackend.sharing(self)
            return
        self._batch = BatchEngine(
            self._model,
            self._tokenizer,
            self._byte_table,
            self._eos_ids,
            parallel=self.config.parallel,
            reuse_prompts=can_trim_prompt_cache(sample_cache),
            piece=self.token_piece,
        )
        self.max_parallel = self.config.parallel

    def open_sequence(self, request: GenerationRequest) -> Any:
        if self._alone is not None:
            return self._alone.open_sequence(request)
        assert self._batch is not None
        tokens, sampler, processors = self._prepare(request)
        budget = min(request.sampling.max_tokens, self.facts.context_length - len(tokens))
        return self._batch.open(tokens, budget, sampler, processors, request.sampling.stop, request.return_tokens)

    def step(self, sequences: list[Any]) -> list[GenerationChunk | BaseException | None]:
        if self._alone is not None:
            return self._alone.step(sequences)
        assert self._batch is not None
        return self._batch.step(sequences)

    def close_sequence(self, sequence: Any) -> None:
        if self._alone is not None:
            self._alone.close_sequence(sequence)
            return
        assert self._batch is not None
        self._batch.close(sequence)

    def unload(self) -> None:
        if self._batch is not None:
            self._batch.shutdown()
            self._batch = None
        if self._alone is not None:
            self._alone.unload()
            self._alone = None
        super().unload()
