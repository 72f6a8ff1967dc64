"""MLX backend: mlx-lm model folders (config.json, *.safetensors, tokenizer files), on Apple Silicon and on
Linux CPU with `mlx[cpu]`.

Tokens come from mlx-lm's own `BatchGenerator` (several requests at once, `mlx_batch.py`) or, for models it cannot
batch, `generate_step` / `speculative_generate_step`, with samplers and logits processors from mlx-lm's factories;
text is assembled from token bytes with the same UTF-8 and stop-string handling as the llama.cpp backend, so both
backends answer alike. mlx is imported here, at module import, so that a machine
without it gets the backends table's clear "cannot be imported" load error.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step, speculative_generate_step
from mlx_lm.models.cache import QuantizedKVCache, can_trim_prompt_cache
from mlx_lm.utils import load_model, load_tokenizer, maybe_set_recommended_wired_limit

from heylook_llm.backends.base import GeneratorBackend
from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.mlx_batch import BatchEngine, batchable_cache
from heylook_llm.backends.mlx_support import (
    CacheFactory,
    LogitsSetup,
    Sampler,
    TokenDecoder,
    build_logits_processors,
    build_sampler,
    cache_factory,
    model_context_length,
    model_vocab_size,
    with_history,
)
from heylook_llm.backends.native_memory import release_free_heap
from heylook_llm.backends.text import StopMatcher, Utf8Assembler
from heylook_llm.backends.token_bytes import token_byte_table
from heylook_llm.backends.tokens import checked_context, common_prefix
from heylook_llm.config.chat_formats import CHAT_FORMATS
from heylook_llm.config.registry import MLXConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError
from heylook_llm.types import Feature, FinishReason, GenerationChunk, GenerationRequest, GenerationStats

log = logging.getLogger(__name__)


class MLXBackend(GeneratorBackend):
    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        assert isinstance(entry.config, MLXConfig)
        self.config: MLXConfig = entry.config
        self._model: Any = None
        self._draft: Any = None
        self._tokenizer: Any = None
        self._template: ChatTemplate | None = None
        self._byte_table: list[bytes] | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._new_cache: CacheFactory | None = None
        # The KV cache of the last generation and the tokens it holds, reused when the next prompt shares a prefix.
        self._cache: list[Any] | None = None
        self._cache_tokens: list[int] = []
        # Set when the model runs through mlx-lm's BatchGenerator (max_parallel > 1).
        self._batch: BatchEngine | None = None

    # --- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        cfg = self.config
        if cfg.vision:
            raise ModelLoadError(
                self.entry.id, "vision: true is not served by the MLX text backend yet (it needs mlx-vlm)"
            )
        if not (cfg.model_path / "config.json").is_file():
            raise ModelLoadError(
                self.entry.id, f"model_path {cfg.model_path} is not an MLX model folder (no config.json there)"
            )
        # On Apple Silicon this keeps the weights wired in GPU memory; elsewhere it does nothing.
        maybe_set_recommended_wired_limit()
        try:
            model, config = load_model(cfg.model_path)
            eos = config.get("eos_token_id")
            tokenizer = load_tokenizer(cfg.model_path, eos_token_ids=eos)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"mlx-lm could not load {cfg.model_path}: {exc}") from exc
        self._model, self._tokenizer = model, tokenizer
        self._vocab_size = model_vocab_size(config, len(tokenizer))
        if cfg.draft_model_path is not None:
            self._draft = self._load_draft(cfg.draft_model_path)
        self._new_cache = cache_factory(self.entry.id, cfg, model, self._draft)
        self._eos_ids = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._byte_table = token_byte_table(tokenizer)
        self._batch = self._batch_engine(self._new_cache())
        self.max_parallel = cfg.parallel if self._batch is not None else 1
        self._template = self._chat_template(tokenizer)
        self.facts.context_length = model_context_length(config, tokenizer)
        self.facts.size_bytes = _folder_weight_bytes(cfg.model_path)
        # On Apple Silicon (or with mlx[cuda]) the weights live in GPU-addressable memory; on CPU they do not.
        on_gpu = mx.default_device().type == mx.DeviceType.gpu
        self.facts.accelerator_bytes = self.facts.size_bytes if on_gpu else 0
        self.facts.chat_template = self._template.source
        self.facts.metadata = _metadata(config, cfg, self.facts.context_length)
        self.features = frozenset({Feature.CHAT, Feature.COMPLETION, Feature.CONTEXT_TOKENS})

    def _batch_engine(self, sample_cache: list[Any]) -> BatchEngine | None:
        """mlx-lm's batch generator for this model, or None where it cannot honour the model's settings."""
        cfg = self.config
        if cfg.parallel <= 1:
            return None
        # The config refuses an explicit parallel > 1 with these; the default falls back to one at a time.
        if self._draft is not None or cfg.cache_type != "standard":
            why = "speculative decoding" if self._draft is not None else f"cache_type {cfg.cache_type}"
            log.info("model '%s' runs one request at a time: mlx-lm cannot batch %s", self.entry.id, why)
            return None
        if not batchable_cache(sample_cache):
            kinds = sorted({type(c).__name__ for c in sample_cache})
            log.info("model '%s' runs one request at a time: mlx-lm cannot batch %s", self.entry.id, ", ".join(kinds))
            return None
        return BatchEngine(
            self._model,
            self._tokenizer,
            self._byte_table,
            self._eos_ids,
            parallel=cfg.parallel,
            reuse_prompts=can_trim_prompt_cache(sample_cache),
        )

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

    def _chat_template(self, tokenizer: Any) -> ChatTemplate:
        source = tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the unnamed one is "default"
            source = source.get("default")
        if not isinstance(source, str) or not source:
            log.warning("model '%s' has no chat template; chat requests use chatml", self.entry.id)
            source = CHAT_FORMATS["chatml"]
        try:
            return ChatTemplate(source, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"the chat template does not compile: {exc}") from exc

    # --- generation -----------------------------------------------------------------------------
    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._tokenizer
        context = checked_context(request.context_tokens, self._vocab_size)
        # Continuing from earlier tokens: the BOS token, if any, is already at their start.
        may_add_special = not context
        if request.messages is not None:
            assert self._template is not None
            text = self._template.render(request.messages)
            bos = tokenizer.bos_token or ""
            # Templates that write the BOS token themselves must not get a second one from the tokenizer.
            add_special = may_add_special and not (bos and text.startswith(bos))
            tokens: list[int] = tokenizer.encode(text, add_special_tokens=add_special)
        else:
            # Raw prompts may spell control tokens ("<|im_start|>"), as in the llama.cpp backend.
            tokens = tokenizer.encode(request.prompt or "", add_special_tokens=may_add_special)
        tokens = context + tokens
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return tokens

    def _prepare(self, request: GenerationRequest) -> tuple[list[int], Sampler, LogitsSetup]:
        """Prompt tokens, sampler and logits processors; raises the request's errors before anything runs."""
        params = request.sampling
        tokens = self._prompt_tokens(request)
        n_ctx = self.facts.context_length
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(len(tokens), n_ctx)
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        sampler = build_sampler(params, self._vocab_size, seed)
        processors = build_logits_processors(params, self._vocab_size, n_ctx)
        return tokens, sampler, processors

    def open_sequence(self, request: GenerationRequest) -> Any:
        if self._batch is None:
            return self.generate_tokens(request)
        tokens, sampler, processors = self._prepare(request)
        budget = min(request.sampling.max_tokens, self.facts.context_length - len(tokens))
        return self._batch.open(
            tokens,
            budget,
            sampler,
            processors.bias + processors.penalties,
            request.sampling.stop,
            request.return_tokens,
        )

    def step(self, sequences: list[Any]) -> list[GenerationChunk | BaseException | None]:
        if self._batch is None:
            return super().step(sequences)
        return self._batch.step(sequences)

    def close_sequence(self, sequence: Any) -> None:
        if self._batch is None:
            super().close_sequence(sequence)
        else:
            self._batch.close(sequence)

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
                logits_processors=processors.bias + processors.penalties,
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
            logits_processors=processors.bias + penalties,
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
        try:
            for item in stream:
                token = int(item[0])
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
                if stops.stopped:
                    finish = FinishReason.STOP
                    if text:
                        yield GenerationChunk(text, token_count=1)
                    break
                if produced >= budget:
                    text += stops.feed(assembler.feed(decoder.flush()) + assembler.flush()) + stops.flush()
                    if text:
                        yield GenerationChunk(text, token_count=1)
                    break
                yield GenerationChunk(text, token_count=1)
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
        yield GenerationChunk("", finish_reason=finish, stats=stats, context_tokens=context)

    # --- unloading ------------------------------------------------------------------------------
    def unload(self) -> None:
        if self._batch is not None:
            self._batch.shutdown()
            self._batch = None
        self._cache, self._cache_tokens = None, []
        self._model = self._draft = self._tokenizer = None
        self._template = None
        self._byte_table = None
        self._new_cache = None
        # MLX keeps freed buffers in its own cache for reuse; hand them back to the system.
        gc.collect()
        mx.clear_cache()
        release_free_heap()


def _folder_weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _metadata(config: dict[str, Any], cfg: MLXConfig, context_length: int) -> dict[str, str]:
    """A few facts in GGUF's key style, so that both backends describe models alike."""
    text = config.get("text_config") or config
    arch = str(config.get("model_type", "unknown"))
    meta = {
        "general.architecture": arch,
        f"{arch}.context_length": str(context_length),
        "mlx.cache_type": cfg.cache_type,
    }
    for key, name in (("hidden_size", "embedding_length"), ("num_hidden_layers", "block_count")):
        if key in text:
            meta[f"{arch}.{name}"] = str(text[key])
    quant = config.get("quantization")
    if isinstance(quant, dict) and "bits" in quant:
        meta["mlx.quantization_bits"] = str(quant["bits"])
    if cfg.draft_model_path is not None:
        meta["mlx.draft_model_path"] = str(cfg.draft_model_path)
    return meta
