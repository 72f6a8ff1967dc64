"""Continuous batching for MLX models through mlx-lm's `BatchGenerator`.

Requests join and leave between steps; each step is one `BatchGenerator.next()` call, which runs one forward
pass for every decoding sequence (and reads the next chunk of any prompt still being read). Each sequence keeps
its own sampler and logits processors, so seeds, logit_bias and penalties behave as on the one-at-a-time path.
Text is assembled here, per sequence, with the same UTF-8 and stop-string handling as every other backend.

Finished and cancelled sequences hand their KV cache back; a small pool keeps the most recent ones, keyed by the
tokens they hold, and a new request starts from the longest prefix it shares with one of them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import KVCache

from heylook_llm.backends.mlx_logits import token_chunk
from heylook_llm.backends.mlx_support import LogitsSetup, Sampler, TokenDecoder
from heylook_llm.backends.text import StopMatcher, Utf8Assembler
from heylook_llm.backends.tokens import common_prefix
from heylook_llm.errors import GenerationFailed
from heylook_llm.types import FinishReason, GenerationChunk, GenerationStats

log = logging.getLogger(__name__)


def batchable_cache(cache: list[Any]) -> bool:
    """Whether BatchGenerator can merge these per-layer caches into one batch cache."""
    return all(callable(getattr(layer, "merge", None)) for layer in cache)


class PromptCachePool:
    """KV caches of finished sequences, keyed by the tokens they hold, most recently used last.

    Only caches made of plain `KVCache` layers are kept: those can serve any prefix of their tokens. A cache
    handed out is a view (the same arrays, a shorter offset); BatchGenerator copies it into its batch cache and
    never writes to it, so one pooled cache can start several requests, even at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: list[tuple[list[int], list[KVCache]]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        """A cache holding the longest prefix of `tokens` found here (at most all but the last token), and its length.

        The last prompt token is always left to process: its logits give the first generated token.
        """
        best, best_len = -1, 0
        for index, (held, _) in enumerate(self._entries):
            common = min(common_prefix(held, tokens), len(tokens) - 1)
            if common > best_len:
                best, best_len = index, common
        if best < 0:
            return None, 0
        entry = self._entries.pop(best)
        self._entries.append(entry)
        return [_view(layer, best_len) for layer in entry[1]], best_len

    def put(self, tokens: list[int], cache: list[Any]) -> None:
        if self.capacity <= 0 or not tokens or not cache:
            return
        if not all(type(layer) is KVCache and layer.offset == len(tokens) for layer in cache):
            return
        for held, _ in self._entries:
            if held[: len(tokens)] == tokens:
                return  # an entry already holds these tokens and more
        # Entries this one extends (earlier turns of the same conversation) are no longer needed.
        self._entries = [(held, c) for held, c in self._entries if tokens[: len(held)] != held]
        # Evaluated now so that the cache no longer refers to the batch arrays it was sliced from.
        mx.eval([(layer.keys, layer.values) for layer in cache])
        self._entries.append((tokens, cache))
        del self._entries[: max(0, len(self._entries) - self.capacity)]

    def clear(self) -> None:
        self._entries.clear()


def _view(layer: KVCache, length: int) -> KVCache:
    view = KVCache()  # type: ignore[no-untyped-call]  # mlx-lm leaves this one unannotated
    view.keys, view.values, view.offset = layer.keys, layer.values, length
    return view


@dataclass(eq=False, slots=True)
class BatchSequence:
    """One request inside the batch: its uid in the generator and its text state."""

    uid: int
    generator: BatchGenerator
    prompt: list[int]
    budget: int
    cached: int
    return_tokens: bool
    decoder: TokenDecoder
    stops: StopMatcher
    started: float
    assembler: Utf8Assembler = field(default_factory=Utf8Assembler)
    first_token_at: float | None = None
    output: list[int] = field(default_factory=list)
    pending: deque[GenerationChunk | BaseException] = field(default_factory=deque)
    """Chunks made when a step ran for other sequences while this one was not being asked for."""
    finished: bool = False
    """Its last chunk (with finish_reason) has been made."""
    in_generator: bool = True
    """The generator still holds it (mlx-lm drops a sequence itself at EOS or its token limit)."""
    grammar: Any = None
    """The output constraint's processor, whose `failed` ends this sequence alone."""
    setup: LogitsSetup = field(default_factory=LogitsSetup)
    """Its processors: the logprob capture, how many alternatives to report, whether the prompt opened reasoning."""


class BatchEngine:
    """Owns one `BatchGenerator` for a loaded model; every method runs on the model's worker thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        byte_table: list[bytes] | None,
        eos_ids: frozenset[int],
        parallel: int,
        reuse_prompts: bool,
        piece: Callable[[int], bytes] | None = None,
    ) -> None:
        """`piece`: a token's bytes with special tokens as their text, for logprobs (default: the byte table)."""
        self._model = model
        self._piece = piece or self._table_piece
        self._tokenizer = tokenizer
        self._byte_table = byte_table
        self._eos_ids = eos_ids
        self._parallel = parallel
        self.pool = PromptCachePool(parallel if reuse_prompts else 0)
        self._live: dict[int, BatchSequence] = {}
        self._generator = self._new_generator()

    def _table_piece(self, token: int) -> bytes:
        table = self._byte_table
        return table[token] if table is not None and 0 <= token < len(table) else b""

    def _new_generator(self) -> BatchGenerator:
        return BatchGenerator(
            self._model,
            stop_tokens=[[token] for token in sorted(self._eos_ids)],
            completion_batch_size=self._parallel,
            prefill_batch_size=self._parallel,
        )

    def open(
        self,
        tokens: list[int],
        budget: int,
        sampler: Sampler,
        processors: LogitsSetup,
        stop: tuple[str, ...] | list[str],
        return_tokens: bool,
    ) -> BatchSequence:
        started = time.perf_counter()
        cache, cached = self.pool.take(tokens)
        # all_tokens: what the reused cache already holds, so that penalties see the whole prompt.
        (uid,) = self._generator.insert(
            [tokens[cached:]],
            max_tokens=[budget],
            caches=[cache] if cache is not None else None,
            all_tokens=[tokens[:cached]],
            samplers=[sampler],
            logits_processors=[processors.all()],
        )
        sequence = BatchSequence(
            uid=uid,
            generator=self._generator,
            prompt=tokens,
            budget=budget,
            cached=cached,
            return_tokens=return_tokens,
            decoder=TokenDecoder(self._byte_table, self._tokenizer),
            stops=StopMatcher(stop),
            started=started,
            grammar=processors.grammar,
            setup=processors,
        )
        self._live[uid] = sequence
        return sequence

    def step(self, sequences: list[BatchSequence]) -> list[GenerationChunk | BaseException | None]:
        """One generator step if any of `sequences` waits for a token; a chunk, None or an error for each."""
        if any(s.in_generator and not s.pending and not s.finished for s in sequences):
            self._advance()
        results: list[GenerationChunk | BaseException | None] = []
        for sequence in sequences:
            if sequence.pending:
                results.append(sequence.pending.popleft())
            elif sequence.generator is not self._generator and not sequence.finished:
                results.append(GenerationFailed("the batch this sequence ran in failed"))
            else:
                results.append(None)
        return results

    def _advance(self) -> None:
        try:
            _, responses = self._generator.next()  # type: ignore[no-untyped-call]
        except Exception:
            # The generator's state is unknown after a failure: start over with an empty one.
            log.exception("an MLX batch step failed; its %d sequences end", len(self._live))
            self._restart()
            raise
        for response in responses:
            sequence = self._live.get(response.uid)
            if sequence is None:
                continue
            if response.finish_reason is not None:
                # mlx-lm has dropped it from the batch and handed back its cache.
                sequence.in_generator = False
                del self._live[response.uid]
                if response.prompt_cache is not None and response.all_tokens is not None:
                    self.pool.put(list(response.all_tokens), response.prompt_cache)
            if sequence.finished:
                continue
            sequence.pending.append(self._on_token(sequence, int(response.token)))
            if not sequence.finished and not sequence.in_generator:
                # mlx-lm ended it on a rule of its own; our limits agree, so this is only a safety net.
                reason = FinishReason.LENGTH if response.finish_reason == "length" else FinishReason.STOP
                sequence.pending.append(self._finish(sequence, reason, ""))

    def _on_token(self, sequence: BatchSequence, token: int) -> GenerationChunk | BaseException:
        if sequence.first_token_at is None:
            sequence.first_token_at = time.perf_counter()
        setup = sequence.setup
        # Taken for every sampled token, the end of sequence included, to stay in step with the captures.
        logprobs = setup.capture.take() if setup.capture is not None else None
        if sequence.grammar is not None and sequence.grammar.failed is not None:
            sequence.finished = True
            failure: BaseException = sequence.grammar.failed
            return failure
        if token in self._eos_ids:
            return self._finish(sequence, FinishReason.STOP, "", counted=False)
        sequence.output.append(token)
        stops = sequence.stops
        text = stops.feed(sequence.assembler.feed(sequence.decoder.feed(token)))
        opened = setup.reasoning_open and len(sequence.output) == 1
        chunk = token_chunk(text, token, logprobs, setup.logprobs, self._piece, reasoning_open=opened)
        if stops.stopped:
            return self._finish(sequence, FinishReason.STOP, chunk)
        if len(sequence.output) >= sequence.budget:
            return self._finish(sequence, FinishReason.LENGTH, chunk)
        return chunk

    def _finish(
        self, sequence: BatchSequence, reason: FinishReason, last: str | GenerationChunk, *, counted: bool = True
    ) -> GenerationChunk:
        """The sequence's final chunk; `last` is its last token's chunk (or text), which it carries on."""
        text = last if isinstance(last, str) else last.text
        stops = sequence.stops
        if not stops.stopped:
            # Bytes held back for an unfinished character or a possible stop string are emitted at the end.
            assembler = sequence.assembler
            text += stops.feed(assembler.feed(sequence.decoder.flush()) + assembler.flush()) + stops.flush()
            if stops.stopped:  # the held-back text completed a stop string
                reason = FinishReason.STOP
        sequence.finished = True
        ended = time.perf_counter()
        first = sequence.first_token_at or ended
        stats = GenerationStats(
            prompt_tokens=len(sequence.prompt),
            completion_tokens=len(sequence.output),
            cached_prompt_tokens=sequence.cached,
            prompt_eval_seconds=first - sequence.started,
            generation_seconds=ended - first,
        )
        context = [*sequence.prompt, *sequence.output] if sequence.return_tokens else None
        final = GenerationChunk(
            text,
            token_count=1 if counted else 0,
            finish_reason=reason,
            stats=stats,
            context_tokens=context,
            stop_sequence=stops.matched if reason is FinishReason.STOP else None,
        )
        if isinstance(last, GenerationChunk):
            final.token_ids, final.logprobs, final.reasoning_open = last.token_ids, last.logprobs, last.reasoning_open
        return final

    def close(self, sequence: BatchSequence) -> None:
        """Take a finished or cancelled sequence out of the batch, keeping its cache for later prompts."""
        self._live.pop(sequence.uid, None)
        if sequence.in_generator and sequence.generator is self._generator:
            sequence.in_generator = False
            returned = self._generator.remove(  # type: ignore[no-untyped-call]
                [sequence.uid], return_prompt_caches=True
            )
            held = returned.get(sequence.uid)
            if held is not None:
                cache, tokens = held
                self.pool.put(list(tokens), list(cache))
        sequence.in_generator = False

    def _restart(self) -> None:
        self._generator.close()  # type: ignore[no-untyped-call]
        self._live.clear()
        self._generator = self._new_generator()

    def shutdown(self) -> None:
        self._generator.close()  # type: ignore[no-untyped-call]
        self._live.clear()
        self.pool.clear()
