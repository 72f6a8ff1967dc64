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
        self.facts.metadata = metadata
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

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        llama = self._llama
        if request.messages is not None:
            if self._template is None:
                raise CapabilityError(f"model '{self.entry.id}' is an embedding model and cannot chat", param="model")
            text = self._template.render(request.messages)
            bos = self._token_text(llama.token_bos())
            # Templates that write the BOS token themselves must not get a second one from the tokenizer.
            add_bos = bool(llama._model.add_bos_token()) and not (bos and text.startswith(bos))
            tokens: list[int] = llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        else:
            if self.config.embedding:
                raise CapabilityError(
                    f"model '{self.entry.id}' is an embedding model and cannot generate text", param="model"
                )
            tokens = llama.tokenize((request.prompt or "").encode("utf-8"), add_bos=bool(llama._model.add_bos_token()))
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return tokens

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
        return self._generate(tokens, params, logits_processor)

    def _generate(
        self, tokens: list[int], params: SamplingParams, logits_processor: list[Any] | None
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
        yield GenerationChunk("", finish_reason=finish, stats=stats)

    def embed(self, inputs: list[str]) -> EmbeddingResult:
        if not self.config.embedding:
            raise CapabilityError(
                f"model '{self.entry.id}' is not an embedding model (set embedding: true in its config)",
                param="model",
            )
        n_ctx = self.facts.context_length
        for text in inputs:
            count = len(self._llama.tokenize(text.encode("utf-8"), add_bos=bool(self._llama._model.add_bos_token())))
            if count > n_ctx:
                raise ContextLengthExceeded(count, n_ctx)
        vectors, count = self._llama.embed(inputs, normalize=True, truncate=False, return_count=True)
        return EmbeddingResult(vectors=[list(map(float, v)) for v in vectors], prompt_tokens=int(count))

    def unload(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
        self._template = None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
