"""Reranking through llama.cpp's rank pooling (`LLAMA_POOLING_TYPE_RANK`).

A reranker GGUF (BERT-style cross-encoders such as bge-reranker, or Qwen3 rerankers) ends in a classification
head; with rank pooling the context's per-sequence embedding is that head's output, and its first value is the
pair's relevance score, as llama-server reports it (a raw logit for one-output heads, the "yes" probability for
Qwen3's two-output head).

Each (query, document) pair is one sequence. Pairs are packed into one `llama_decode` while they fit the
context and the sequence count, the scores are read, and the memory is cleared for the next pack. The pair's
prompt follows the GGUF's `tokenizer.chat_template.rerank` when it has one (its `{query}` and `{document}`
replaced; the client's text is tokenized without special-token parsing, so it cannot inject control tokens),
else llama-server's plain form: [BOS] query [EOS] [SEP] document [EOS], each marker where the vocabulary asks
for it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from heylook_llm.backends.llama_native import free_native, init_backend, native_errors, native_reason
from heylook_llm.backends.llama_native import model_params as native_model_params
from heylook_llm.backends.llama_vocab import tokenize_with
from heylook_llm.errors import GenerationFailed, InvalidRequest

_QUERY = "{query}"
_DOCUMENT = "{document}"


@dataclass(frozen=True, slots=True)
class RankerOptions:
    model_path: Path
    n_ctx: int
    max_sequences: int
    n_threads: int
    n_threads_batch: int
    n_gpu_layers: int
    use_mmap: bool


class LlamaRanker:
    """One llama.cpp model and context with rank pooling. Not thread-safe: the model's worker thread owns it."""

    def __init__(self, options: RankerOptions) -> None:
        self.options = options
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._batch: Any = None
        self._template: str | None = None
        self.n_ctx = 0

    def load(self) -> None:
        init_backend()
        opts = self.options
        model_params = native_model_params(opts.n_gpu_layers, opts.use_mmap)
        with native_errors() as errors:
            self._model = llama_cpp.llama_model_load_from_file(str(opts.model_path).encode(), model_params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {opts.model_path}: {native_reason(errors, 'no reason')}")
        if int(llama_cpp.llama_model_n_cls_out(self._model)) < 1 or _header_pooling(self._model) != "4":
            self.unload()
            raise RuntimeError(
                f"{opts.model_path.name} is not a reranker: its GGUF header does not ask for rank pooling "
                "(pooling_type 4) with a classification head"
            )
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = opts.n_ctx
        ctx_params.n_seq_max = opts.max_sequences
        # A pooled sequence must sit in one micro-batch, and a pair may be as long as the context.
        ctx_params.n_batch = opts.n_ctx
        ctx_params.n_ubatch = opts.n_ctx
        ctx_params.n_threads = opts.n_threads
        ctx_params.n_threads_batch = opts.n_threads_batch
        ctx_params.embeddings = True
        ctx_params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_RANK
        # One shared cache: the packed pairs together fill at most n_ctx tokens, whatever their count.
        ctx_params.kv_unified = True
        ctx_params.no_perf = True
        with native_errors() as errors:
            self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            self.unload()
            raise RuntimeError(
                f"llama.cpp could not create a context of {opts.n_ctx} tokens: {native_reason(errors, 'no reason')}"
            )
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ctx))
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._batch = llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
        template = llama_cpp.llama_model_chat_template(self._model, b"rerank")
        self._template = template.decode("utf-8", "replace") if template else None

    def unload(self) -> None:
        free_native(self._batch, self._ctx, self._model)
        self._batch = self._ctx = self._model = None

    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1 << 16)
        for i in range(int(llama_cpp.llama_model_meta_count(self._model))):
            if llama_cpp.llama_model_meta_key_by_index(self._model, i, buf, len(buf)) < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            if llama_cpp.llama_model_meta_val_str_by_index(self._model, i, buf, len(buf)) >= 0:
                out[key] = buf.value.decode("utf-8", "replace")
        return out

    # --- scoring ------------------------------------------------------------------------------
    def pair_tokens(self, query: str, document: str) -> list[int]:
        """The pair's prompt as tokens (see the module's docstring)."""
        if self._template is not None:
            return self._templated(query, document)
        vocab = self._vocab
        tokens: list[int] = []
        if llama_cpp.llama_vocab_get_add_bos(vocab):
            tokens.append(int(llama_cpp.llama_vocab_bos(vocab)))
        eos = int(llama_cpp.llama_vocab_eos(vocab))
        if eos < 0:
            eos = int(llama_cpp.llama_vocab_sep(vocab))
        add_eos = bool(llama_cpp.llama_vocab_get_add_eos(vocab)) and eos >= 0
        tokens += self._tokenize(query, special=False)
        if add_eos:
            tokens.append(eos)
        if llama_cpp.llama_vocab_get_add_sep(vocab):
            tokens.append(int(llama_cpp.llama_vocab_sep(vocab)))
        tokens += self._tokenize(document, special=False)
        if add_eos:
            tokens.append(eos)
        return tokens

    def _templated(self, query: str, document: str) -> list[int]:
        assert self._template is not None
        tokens: list[int] = []
        if llama_cpp.llama_vocab_get_add_bos(self._vocab):
            tokens.append(int(llama_cpp.llama_vocab_bos(self._vocab)))
        rest = self._template
        while rest:
            cuts = [(rest.find(mark), mark) for mark in (_QUERY, _DOCUMENT) if mark in rest]
            if not cuts:
                tokens += self._tokenize(rest, special=True)
                break
            at, mark = min(cuts)
            tokens += self._tokenize(rest[:at], special=True)
            tokens += self._tokenize(query if mark == _QUERY else document, special=False)
            rest = rest[at + len(mark) :]
        return tokens

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        if not text:
            return []
        return tokenize_with(self._vocab, text, add_bos=False, special=special)

    def score(self, pairs: list[list[int]]) -> list[float]:
        """One score per tokenized pair; each pair must fit the context (checked by the caller)."""
        scores: list[float] = []
        start = 0
        while start < len(pairs):
            end, used = start, 0
            limit = self.options.max_sequences
            while end < len(pairs) and end - start < limit and used + len(pairs[end]) <= self.n_ctx:
                used += len(pairs[end])
                end += 1
            scores += self._score_pack(pairs[start:end])
            start = end
        return scores

    def _score_pack(self, pack: list[list[int]]) -> list[float]:
        batch = self._batch
        n = 0
        for seq_id, tokens in enumerate(pack):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq_id
                # Pooling reads every token's output; marking them all saves llama.cpp a warning per call.
                batch.logits[n] = 1
                n += 1
        batch.n_tokens = n
        memory = llama_cpp.llama_get_memory(self._ctx)
        try:
            status = llama_cpp.llama_decode(self._ctx, batch)
            if status != 0:
                raise GenerationFailed(f"llama_decode failed with status {status} while reranking")
            scores: list[float] = []
            for seq_id in range(len(pack)):
                values = llama_cpp.llama_get_embeddings_seq(self._ctx, seq_id)
                if not values:
                    raise GenerationFailed("llama.cpp returned no rank score for a document")
                scores.append(float(values[0]))
            return scores
        finally:
            llama_cpp.llama_memory_clear(memory, True)


def _header_pooling(model: Any) -> str:
    """The GGUF's `<arch>.pooling_type` value as text ("" when absent)."""
    buf = ctypes.create_string_buffer(256)
    if llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf)) < 0:
        return ""
    arch = buf.value
    if llama_cpp.llama_model_meta_val_str(model, arch + b".pooling_type", buf, len(buf)) < 0:
        return ""
    return buf.value.decode("ascii", "replace")


def check_pair_lengths(lengths: list[int], n_ctx: int) -> None:
    """A 400 naming the first document whose pair with the query does not fit the context."""
    for index, length in enumerate(lengths):
        if length > n_ctx:
            raise InvalidRequest(
                f"documents[{index}] with the query is {length} tokens long but the model's context window is "
                f"{n_ctx} tokens",
                param=f"documents[{index}]",
            )
