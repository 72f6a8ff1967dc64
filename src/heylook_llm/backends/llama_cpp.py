"""llama.cpp backend (GGUF files) through llama-cpp-python."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from heylook_llm.backends.base import Backend
from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.text import StopMatcher, Utf8Assembler
from heylook_llm.config.chat_formats import CHAT_FORMATS
from heylook_llm.config.registry import LlamaCppConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import CapabilityError, ContextLengthExceeded, InvalidRequest, ModelLoadError
from heylook_llm.types import (
    EmbeddingResult,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    ResponseFormat,
    SamplingParams,
)

log = logging.getLogger(__name__)


class LlamaCppBackend(Backend):
    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        assert isinstance(entry.config, LlamaCppConfig)
        self.config: LlamaCppConfig = entry.config
        self._llama: Any = None
        self._template: ChatTemplate | None = None
        self._eog_ids: frozenset[int] = frozenset()
        self._fim_tokens: tuple[int, int, int] | None = None

    def load(self) -> None:
        cfg = self.config
        if not cfg.model_path.is_file():
            raise ModelLoadError(self.entry.id, f"model_path {cfg.model_path} does not exist or is not a file")
        from llama_cpp import Llama

        try:
            self._llama = Llama(
                model_path=str(cfg.model_path),
                n_ctx=cfg.n_ctx,
                n_gpu_layers=cfg.n_gpu_layers,
                n_threads=cfg.n_threads or max(1, (os.cpu_count() or 2)),
                n_batch=cfg.n_batch,
                use_mmap=cfg.use_mmap,
                embedding=cfg.embedding,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(self.entry.id, f"llama.cpp could not load {cfg.model_path}: {exc}") from exc
        llama = self._llama
        metadata: dict[str, str] = dict(llama.metadata)
        self.facts.context_length = llama.n_ctx()
        self.facts.size_bytes = cfg.model_path.stat().st_size
        self.facts.accelerator_bytes = _offloaded_bytes(self.facts.size_bytes, cfg.n_gpu_layers, metadata)
        self.facts.metadata = metadata
        self._fim_tokens = _fim_tokens(llama)
        self._eog_ids = frozenset(t for t in range(llama.n_vocab()) if self._is_eog(t))
        if not cfg.embedding:
            self._template = self._chat_template(metadata)
            self.facts.chat_template = self._template.source

    def _is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._llama._model.token_get_text(token))

    def _chat_template(self, metadata: dict[str, str]) -> ChatTemplate:
        cfg = self.config
        source = cfg.chat_template
        if source is None and cfg.chat_format is not None:
            source = CHAT_FORMATS[cfg.chat_format]
        if source is None:
            source = metadata.get("tokenizer.chat_template")
        if source is None:
            log.warning(
                "model '%s' has no chat template; chat requests use chatml (set chat_format to change)", self.entry.id
            )
            source = CHAT_FORMATS["chatml"]
        bos = self._token_text(self._llama.token_bos())
        eos = self._token_text(self._llama.token_eos())
        try:
            return ChatTemplate(source, bos_token=bos, eos_token=eos)
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"the chat template does not compile: {exc}") from exc

    def check_request(self, request: GenerationRequest) -> None:
        if request.suffix is not None and self._fim_tokens is None:
            raise CapabilityError(
                f"model '{self.entry.id}' has no fill-in-the-middle tokens, so it cannot complete with a suffix",
                param="suffix",
            )
        if request.suffix is not None and request.messages is not None:
            raise InvalidRequest("suffix works with a prompt, not with chat messages", param="suffix")

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        llama = self._llama
        context = _checked_context(request.context_tokens, llama.n_vocab())
        # Continuing from earlier tokens: the BOS token is already at their start.
        may_add_bos = bool(llama._model.add_bos_token()) and not context
        if request.messages is not None:
            if self._template is None:
                raise CapabilityError(f"model '{self.entry.id}' is an embedding model and cannot chat", param="model")
            text = self._template.render(request.messages)
            bos = self._token_text(llama.token_bos())
            # Templates that write the BOS token themselves must not get a second one from the tokenizer.
            add_bos = may_add_bos and not (bos and text.startswith(bos))
            tokens: list[int] = llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        else:
            if self.config.embedding:
                raise CapabilityError(
                    f"model '{self.entry.id}' is an embedding model and cannot generate text", param="model"
                )
            # Raw prompts may spell control tokens ("<|im_start|>"), as llama.cpp's own server allows.
            tokens = llama.tokenize((request.prompt or "").encode("utf-8"), add_bos=may_add_bos, special=True)
            if request.suffix is not None:
                tokens = self._fill_in_middle(tokens, request.suffix, may_add_bos)
        tokens = context + tokens
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return tokens

    def _fill_in_middle(self, prefix: list[int], suffix: str, add_bos: bool) -> list[int]:
        """Prefix-suffix-middle order: [BOS] <PRE> prefix <SUF> suffix <MID>; the model writes the middle."""
        if self._fim_tokens is None:
            raise CapabilityError(f"model '{self.entry.id}' has no fill-in-the-middle tokens", param="suffix")
        pre, suf, mid = self._fim_tokens
        bos = self._llama.token_bos()
        if prefix and prefix[0] == bos and add_bos:
            prefix = prefix[1:]
        suffix_tokens: list[int] = self._llama.tokenize(suffix.encode("utf-8"), add_bos=False, special=False)
        return [*([bos] if add_bos else []), pre, *prefix, suf, *suffix_tokens, mid]

    def _logit_bias(self, params: SamplingParams) -> list[Any] | None:
        if not params.logit_bias:
            return None
        n_vocab = self._llama.n_vocab()
        bias = np.zeros(n_vocab, dtype=np.float32)
        for token, value in params.logit_bias:
            if not 0 <= token < n_vocab:
                raise InvalidRequest(
                    f"logit_bias token id {token} is outside the vocabulary (0..{n_vocab - 1})", param="logit_bias"
                )
            # OpenAI's -100/100 mean ban/force; -inf keeps a banned token out even after other samplers run.
            bias[token] = -np.inf if value <= -100 else value

        def apply(_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
            return scores + bias

        return [apply]

    def generate(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        params = request.sampling
        tokens = self._prompt_tokens(request)
        n_ctx = self.facts.context_length
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(len(tokens), n_ctx)
        logits_processor = self._logit_bias(params)
        grammar = json_grammar(request.response_format, self._llama) if request.response_format is not None else None
        return self._generate(tokens, params, logits_processor, grammar, request.return_tokens)

    def _generate(
        self,
        tokens: list[int],
        params: SamplingParams,
        logits_processor: list[Any] | None,
        grammar: Any = None,
        return_tokens: bool = False,
    ) -> Generator[GenerationChunk, None, None]:
        llama = self._llama
        n_ctx = self.facts.context_length
        cached = _common_prefix(llama._input_ids[: llama.n_tokens].tolist(), tokens)
        cached = min(cached, len(tokens) - 1)
        budget = min(params.max_tokens, n_ctx - len(tokens))
        llama.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        llama.last_n_tokens_size = params.repeat_last_n
        started = time.perf_counter()
        first_token_at = started
        assembler = Utf8Assembler()
        stops = StopMatcher(params.stop)
        produced = 0
        output_tokens: list[int] = []
        finish = FinishReason.LENGTH
        stream = llama.generate(
            tokens,
            temp=max(params.temperature, 0.0),
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            repeat_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logits_processor=logits_processor,
            grammar=grammar,
            reset=True,
        )
        try:
            for token in stream:
                if produced == 0:
                    first_token_at = time.perf_counter()
                if token in self._eog_ids:
                    finish = FinishReason.STOP
                    break
                produced += 1
                output_tokens.append(token)
                text = stops.feed(assembler.feed(llama.detokenize([token])))
                if stops.stopped:
                    finish = FinishReason.STOP
                    if text:
                        yield GenerationChunk(text, token_count=1)
                    break
                if produced >= budget:
                    text += stops.feed(assembler.flush()) + stops.flush()
                    if text:
                        yield GenerationChunk(text, token_count=1)
                    break
                yield GenerationChunk(text, token_count=1)
        finally:
            stream.close()
        if finish is FinishReason.STOP and not stops.stopped:
            tail = stops.feed(assembler.flush()) + stops.flush()
            if tail:
                yield GenerationChunk(tail)
        ended = time.perf_counter()
        stats = GenerationStats(
            prompt_tokens=len(tokens),
            completion_tokens=produced,
            cached_prompt_tokens=cached,
            prompt_eval_seconds=first_token_at - started,
            generation_seconds=ended - first_token_at,
        )
        context = [*tokens, *output_tokens] if return_tokens else None
        yield GenerationChunk("", finish_reason=finish, stats=stats, context_tokens=context)

    def embed(self, inputs: list[str], *, truncate: bool = False) -> EmbeddingResult:
        if not self.config.embedding:
            raise CapabilityError(
                f"model '{self.entry.id}' is not an embedding model (set embedding: true in its config)",
                param="model",
            )
        n_ctx = self.facts.context_length
        if not truncate:
            for text in inputs:
                count = len(
                    self._llama.tokenize(text.encode("utf-8"), add_bos=bool(self._llama._model.add_bos_token()))
                )
                if count > n_ctx:
                    raise ContextLengthExceeded(count, n_ctx)
        # llama-cpp-python's truncate keeps the first n_ctx tokens of each input (Ollama's truncate does the same).
        vectors, count = self._llama.embed(inputs, normalize=True, truncate=truncate, return_count=True)
        return EmbeddingResult(vectors=[list(map(float, v)) for v in vectors], prompt_tokens=int(count))

    def unload(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
        self._template = None


def json_grammar_source(response_format: ResponseFormat) -> str:
    """GBNF for "json" (any object) or a JSON schema, through llama-cpp-python's schema converter."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if response_format == "json":
        return JSON_GBNF
    try:
        return str(json_schema_to_gbnf(orjson.dumps(response_format).decode()))
    except Exception as exc:  # the converter raises AssertionError, ValueError, KeyError... on what it lacks
        raise InvalidRequest(
            f"format: this JSON schema cannot be turned into a grammar: {type(exc).__name__}: {exc}",
            param="format",
        ) from exc


def json_grammar(response_format: ResponseFormat, llama: Any) -> Any:
    """A compiled-and-checked LlamaGrammar: llama.cpp answers NULL for a grammar it cannot parse, and a NULL
    sampler must never reach the sampler chain."""
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    source = json_grammar_source(response_format)
    probe = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, source.encode("utf-8"), b"root")
    if not probe:
        raise InvalidRequest("format: the grammar made from this JSON schema does not parse", param="format")
    llama_cpp.llama_sampler_free(probe)
    return LlamaGrammar.from_string(source, verbose=False)


def _fim_tokens(llama: Any) -> tuple[int, int, int] | None:
    """The model's fill-in-the-middle tokens (prefix, suffix, middle), or None when it has none."""
    model = llama._model
    tokens = (model.token_prefix(), model.token_suffix(), model.token_middle())
    return tokens if all(t >= 0 for t in tokens) else None


def _checked_context(context: list[int] | None, n_vocab: int) -> list[int]:
    if not context:
        return []
    for token in context:
        if not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"context holds token id {token}, outside the vocabulary (0..{n_vocab - 1})", param="context"
            )
    return list(context)


def _offloaded_bytes(size_bytes: int, n_gpu_layers: int, metadata: dict[str, str]) -> int:
    """Roughly how much of the weights llama.cpp put in GPU memory (a share by offloaded layers)."""
    import llama_cpp

    if n_gpu_layers == 0 or not llama_cpp.llama_supports_gpu_offload():
        return 0
    architecture = metadata.get("general.architecture", "")
    try:
        layers = int(metadata.get(f"{architecture}.block_count", "0"))
    except ValueError:
        layers = 0
    if n_gpu_layers < 0 or layers == 0 or n_gpu_layers > layers:
        return size_bytes
    return size_bytes * n_gpu_layers // (layers + 1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
