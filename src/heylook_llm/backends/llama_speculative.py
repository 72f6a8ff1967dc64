"""Speculative decoding for the llama.cpp engine: drafted tokens checked by the model in the same batch.

A sequence that decodes greedily (temperature 0 or top_k 1) with no output constraint, no logprobs, no reasoning
gate and no images may speculate. Before each step it gets up to k drafted tokens, either from its own context
(`NgramLookup`: the continuation of the latest earlier occurrence of the context's last n-gram) or from a second,
smaller model run greedily (`DraftModel`). The engine puts the sequence's next token and its drafts in the batch
with logits for each; `SequenceDrafting.take` then samples position after position with the sequence's own sampler
chain, for as long as each sampled token is the drafted one, and drops the rejected positions from the KV cache.
Every token still goes through the engine's `_sample` (stop strings, max_tokens, EOS, penalties), so the output is
the one the model produces without speculation; a step only yields several tokens at once.

All methods run on the model's worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from heylook_llm.backends.llama_native import free_native, native_errors, native_reason
from heylook_llm.backends.llama_native import model_params as native_model_params
from heylook_llm.backends.llama_options import default_flash_attn
from heylook_llm.backends.tokens import common_prefix
from heylook_llm.config.registry import LlamaCppConfig
from heylook_llm.errors import GenerationFailed
from heylook_llm.types import GenerationChunk

if TYPE_CHECKING:
    from heylook_llm.backends.llama_sequence import Sequence

log = logging.getLogger(__name__)

VOCAB_SAMPLES = 64
"""Token texts compared between the model and its draft model at load, spread over the vocabulary."""


@dataclass(slots=True, frozen=True)
class SpeculationOptions:
    """How a llama.cpp model drafts tokens: `draft_model_path` set, or prompt lookup (n-grams)."""

    num_draft_tokens: int
    draft_model_path: Path | None = None
    ngram_min: int = 2
    ngram_max: int = 3


class NgramLookup:
    """Prompt-lookup drafting: find the context's last n-gram earlier in the context and propose what followed it.

    An index maps each n-gram (ngram_min..ngram_max tokens) to the position after its latest occurrence; it is
    extended as tokens are appended, so a proposal costs a few dictionary look-ups, not a scan of the context.
    Longer n-grams are tried first: they pick the right place in a text being repeated more often.
    """

    def __init__(self, ngram_min: int, ngram_max: int, tokens: list[int] | None = None) -> None:
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0
        """The n-grams ending before this position are in the index."""
        if tokens:
            self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        self.tokens.extend(tokens)

    def propose(self, k: int) -> list[int]:
        """Up to `k` tokens that followed the longest matching n-gram's latest earlier occurrence; [] for none."""
        self._catch_up()
        tokens = self.tokens
        end = len(tokens)
        for n in range(min(self.ngram_max, end), self.ngram_min - 1, -1):
            start = self._index.get(tuple(tokens[end - n :]))
            if start is not None:
                return tokens[start : start + k]
        return []

    def _catch_up(self) -> None:
        # The n-grams ending at the last token are the key being looked up: indexed only once a token follows them,
        # so that a match always has a continuation.
        tokens = self.tokens
        last = len(tokens) - 1
        index = self._index
        lo, hi = self.ngram_min, self.ngram_max
        for i in range(self._indexed, last):
            for n in range(lo, min(hi, i + 1) + 1):
                index[tuple(tokens[i - n + 1 : i + 1])] = i + 1
        self._indexed = max(self._indexed, last)


@dataclass(slots=True)
class DraftRequest:
    """One sequence asking the draft model for up to `k` tokens after its context."""

    seq: Sequence
    drafting: SequenceDrafting
    k: int


class DraftModel:
    """A second llama.cpp context on a smaller model with the same vocabulary, run greedily to draft tokens.

    It has the engine's slots (one KV stream each, same seq ids). Each slot remembers the tokens its cache holds;
    a proposal first evaluates what the sequence's context has that the cache lacks (the whole prompt the first
    time), then drafts one token per decode. Sequences drafting in the same step share every decode.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        parallel: int,
        n_batch: int,
        n_threads: int,
        n_threads_batch: int,
        n_gpu_layers: int,
        use_mmap: bool,
    ) -> None:
        self.path = path
        self._n_ctx = n_ctx
        self._parallel = parallel
        self._n_batch = max(n_batch, parallel)
        self._n_threads = n_threads
        self._n_threads_batch = n_threads_batch
        self._n_gpu_layers = n_gpu_layers
        self._use_mmap = use_mmap
        self._model: Any = None
        self._ctx: Any = None
        self._mem: Any = None
        self._batch: Any = None
        self.n_vocab = 0
        self.eog_ids: frozenset[int] = frozenset()
        self._cached: list[list[int]] = [[] for _ in range(parallel)]

    def load(self, target_vocab: Any) -> None:
        """Load the draft model; RuntimeError when it cannot be loaded or its vocabulary is not the model's."""
        params = native_model_params(self._n_gpu_layers, self._use_mmap)
        with native_errors() as errors:
            self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise RuntimeError(
                f"llama.cpp could not load the draft model: {native_reason(errors, 'it gave no reason')}"
            )
        try:
            self._check_vocabulary(target_vocab)
            if llama_cpp.llama_model_is_recurrent(self._model) or llama_cpp.llama_model_is_hybrid(self._model):
                raise RuntimeError("the draft model is recurrent: its state cannot be rewound after rejected drafts")
            self._create_context()
        except BaseException:
            self.unload()
            raise

    def _check_vocabulary(self, target_vocab: Any) -> None:
        vocab = llama_cpp.llama_model_get_vocab(self._model)
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        target_n = int(llama_cpp.llama_vocab_n_tokens(target_vocab))
        if n_vocab != target_n:
            raise RuntimeError(f"the draft model's vocabulary has {n_vocab} tokens, the model's {target_n}")
        for token in range(0, n_vocab, max(1, n_vocab // VOCAB_SAMPLES)):
            if llama_cpp.llama_vocab_get_text(vocab, token) != llama_cpp.llama_vocab_get_text(target_vocab, token):
                raise RuntimeError(f"the draft model's vocabulary differs from the model's (token {token})")
        self.n_vocab = n_vocab
        self.eog_ids = frozenset(t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t))

    def _create_context(self) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self._n_ctx * self._parallel
        params.n_seq_max = self._parallel
        params.n_batch = self._n_batch
        params.n_ubatch = self._n_batch
        params.n_threads = self._n_threads
        params.n_threads_batch = self._n_threads_batch
        heads = int(llama_cpp.llama_model_n_head(self._model))
        width = int(llama_cpp.llama_model_n_embd(self._model)) // heads if heads > 0 else 0
        offloaded = self._n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        flash_attn = default_flash_attn(width, offloaded)
        if flash_attn is False:
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.kv_unified = False
        params.no_perf = True
        with native_errors() as errors:
            self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            reason = native_reason(errors, "it gave no reason")
            raise RuntimeError(f"llama.cpp could not create the draft model's context: {reason}")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)

    def unload(self) -> None:
        free_native(self._batch, self._ctx, self._model)
        self._batch = self._ctx = self._model = None
        self._mem = None

    def attach(self, seq_id: int, prompt: list[int]) -> int:
        """Keep the slot's cached prefix shared with `prompt` (at most all but its last token); returns its length."""
        cached = self._cached[seq_id]
        keep = min(common_prefix(cached, prompt), max(0, len(prompt) - 1))
        return self._trim(seq_id, keep)

    def _trim(self, seq_id: int, keep: int) -> int:
        cached = self._cached[seq_id]
        if len(cached) > keep and not llama_cpp.llama_memory_seq_rm(self._mem, seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
            keep = 0
        del cached[keep:]
        return keep

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        """Drafts for each request (fewer than asked after an end-of-generation token; none if a decode fails)."""
        try:
            drafts = [[token] for token in self._decode(self._catch_up(requests))]
            for _ in range(1, max(r.k for r in requests)):
                going = [
                    i for i, r in enumerate(requests) if len(drafts[i]) < r.k and drafts[i][-1] not in self.eog_ids
                ]
                if not going:
                    break
                entries = [(requests[i].drafting.seq_id, drafts[i][-1], True) for i in going]
                for i, token in zip(going, self._decode(entries), strict=True):
                    drafts[i].append(token)
        except GenerationFailed as exc:
            # Drafts change speed, never output: a failed draft decode only means no drafts this step.
            log.warning("the draft model failed (%s); its cache is cleared", exc)
            for r in requests:
                r.drafting.synced = self._trim(r.drafting.seq_id, 0)
            return [[] for _ in requests]
        return drafts

    def _catch_up(self, requests: list[DraftRequest]) -> list[tuple[int, int, bool]]:
        """The entries that evaluate what each context has that the draft cache lacks (at least its last token,
        whose logits give the first draft). The cache may hold earlier drafts past `synced`: those the context
        now has are kept."""
        entries: list[tuple[int, int, bool]] = []
        for r in requests:
            drafting = r.drafting
            seq_id = drafting.seq_id
            tail = _context_from(r.seq, drafting.synced)
            same = min(common_prefix(self._cached[seq_id][drafting.synced :], tail), len(tail) - 1)
            kept = self._trim(seq_id, drafting.synced + same)
            missing = tail[kept - drafting.synced :] if kept >= drafting.synced else _context_from(r.seq, kept)
            entries.extend((seq_id, token, False) for token in missing)
            entries[-1] = (seq_id, missing[-1], True)
            drafting.synced = kept + len(missing)
        return entries

    def _decode(self, entries: list[tuple[int, int, bool]]) -> list[int]:
        """Evaluate `entries` (seq id, token, logits wanted) in order, `n_batch` at a time; returns the greedy next
        token after each entry that wants logits, in order."""
        out: list[int] = []
        batch = self._batch
        for start in range(0, len(entries), self._n_batch):
            part = entries[start : start + self._n_batch]
            for j, (seq_id, token, logits) in enumerate(part):
                cached = self._cached[seq_id]
                batch.token[j] = token
                batch.pos[j] = len(cached)
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seq_id
                batch.logits[j] = logits
                cached.append(token)
            batch.n_tokens = len(part)
            status = llama_cpp.llama_decode(self._ctx, batch)
            if status != 0:
                raise GenerationFailed(f"llama_decode failed with status {status}")
            for j, entry in enumerate(part):
                if entry[2]:
                    pointer = llama_cpp.llama_get_logits_ith(self._ctx, j)
                    out.append(int(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).argmax()))
        return out


@dataclass(eq=False, slots=True)
class SequenceDrafting:
    """One speculating sequence: its drafts for the current step and its counts."""

    seq_id: int
    lookup: NgramLookup | None = None
    """Prompt-lookup drafting; None when a draft model drafts."""
    looked_up_output: int = 0
    """Output tokens already added to `lookup`."""
    synced: int = 0
    """Leading context tokens the draft model's cache holds (draft model only)."""
    drafts: list[int] = field(default_factory=list)
    """This step's drafts, in the batch after the sequence's next token."""
    drafted: int = 0
    accepted: int = 0

    def take(
        self,
        seq: Sequence,
        sample: Callable[[Sequence], GenerationChunk | BaseException],
        memory: Any,
    ) -> GenerationChunk | BaseException:
        """Sample the sequence's next token, then one more for each draft the model agrees with; drop the KV
        positions of rejected drafts. `sample` is the engine's own sampling (it reads `seq.logits_index`)."""
        drafts, self.drafts = self.drafts, []
        result = sample(seq)
        if drafts and isinstance(result, GenerationChunk):
            fed = 0
            # A draft whose position the model confirmed was fed to it: its logits give the next token.
            while not seq.done and fed < len(drafts) and seq.next_token == drafts[fed]:
                fed += 1
                seq.logits_index += 1
                more = sample(seq)
                if isinstance(more, BaseException):
                    result = more
                    break
                result.absorb(more)
            if isinstance(result, GenerationChunk):
                produced = result.token_ids
                self.accepted += common_prefix(produced[: len(drafts)], drafts)
            self.drafted += len(drafts)
            slot = seq.slot
            slot.cached.extend(drafts[:fed])
            if fed < len(drafts) and not llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, len(slot.cached), -1):
                seq.done = True
                return GenerationFailed("llama.cpp could not drop rejected draft tokens from the KV cache")
        if isinstance(result, GenerationChunk) and result.stats is not None:
            result.stats.draft_tokens = self.drafted
            result.stats.accepted_draft_tokens = self.accepted
            log.debug(
                "speculation: %d of %d drafted tokens accepted, %d generated",
                self.accepted,
                self.drafted,
                result.stats.completion_tokens,
            )
        return result


class Speculator:
    """The engine's speculative decoding: which sequences speculate and their drafts each step."""

    def __init__(self, options: SpeculationOptions, draft: DraftModel | None) -> None:
        self.options = options
        self.draft = draft

    def unload(self) -> None:
        if self.draft is not None:
            self.draft.unload()
            self.draft = None

    def attach(self, seq: Sequence) -> SequenceDrafting | None:
        """Drafting for a newly opened sequence, or None when it does not speculate: sampled output, an output
        constraint, logprobs, a reasoning gate or images (their tokens would need the same treatment per position,
        and drafts from a model or the context cannot see an image)."""
        params = seq.params
        if not (params.greedy or params.top_k == 1):
            return None
        if seq.mask is not None or seq.logprobs is not None or seq.gate is not None or seq.media is not None:
            return None
        seq_id = seq.slot.seq_id
        if self.draft is None:
            opts = self.options
            return SequenceDrafting(seq_id, lookup=NgramLookup(opts.ngram_min, opts.ngram_max, seq.prompt))
        return SequenceDrafting(seq_id, synced=self.draft.attach(seq_id, seq.prompt))

    def propose(self, decoding: list[Sequence], room: int) -> None:
        """Set this step's drafts of the speculating sequences in `decoding`, `room` batch entries at most in all.

        A sequence drafts no more than its budget can still take after the next token, so that drafts stay within
        max_tokens and the context window."""
        requests: list[DraftRequest] = []
        for seq in decoding:
            drafting = seq.drafting
            if drafting is None:
                continue
            k = min(self.options.num_draft_tokens, seq.budget - len(seq.output) - 1, room)
            if k <= 0:
                continue
            if drafting.lookup is not None:
                drafting.lookup.extend(seq.output[drafting.looked_up_output :])
                drafting.looked_up_output = len(seq.output)
                drafting.drafts = drafting.lookup.propose(k)
                room -= len(drafting.drafts)
            else:
                requests.append(DraftRequest(seq, drafting, k))
                room -= k
        if requests and self.draft is not None:
            for request, drafts in zip(requests, self.draft.propose(requests), strict=True):
                request.drafting.drafts = drafts

    @staticmethod
    def put_drafts(seq: Sequence, batch: Any, n: int) -> int:
        """Add the sequence's drafts to `batch` after its next token (at entry `n`), each with logits; returns the
        next free entry. The slot's token list takes only the drafts the model confirms (`take`)."""
        drafting = seq.drafting
        if drafting is None or not drafting.drafts:
            return n
        pos = len(seq.slot.cached)
        seq_id = seq.slot.seq_id
        for i, token in enumerate(drafting.drafts):
            batch.token[n] = token
            batch.pos[n] = pos + i
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = True
            n += 1
        return n


def _context_from(seq: Sequence, start: int) -> list[int]:
    """The sequence's context (prompt, then output up to its next token) from `start` on, without copying it all."""
    prompt = seq.prompt
    if start < len(prompt):
        return prompt[start:] + seq.output
    return seq.output[start - len(prompt) :]


def speculation_options(config: LlamaCppConfig) -> SpeculationOptions | None:
    """The speculative decoding models.yaml asks for (None: none)."""
    if config.draft_model_path is not None:
        return SpeculationOptions(config.num_draft_tokens, draft_model_path=config.draft_model_path)
    lookup = config.prompt_lookup
    if lookup is not None:
        return SpeculationOptions(lookup.num_draft_tokens, ngram_min=lookup.ngram_min, ngram_max=lookup.ngram_max)
    return None


def load_speculator(options: SpeculationOptions, target_vocab: Any, draft_model: DraftModel | None) -> Speculator:
    """A speculator for `options`, loading `draft_model` when there is one (RuntimeError when it cannot load)."""
    if draft_model is not None:
        draft_model.load(target_vocab)
    return Speculator(options, draft_model)
