"""mlx-lm logits processors for log probabilities and reasoning, in the one-at-a-time and the batched paths alike.

mlx-lm calls a sequence's processors once per sampled token, with the tokens so far (the first call right after
the prompt). `LogprobCapture` goes first, so it sees the raw logits (backends/logprobs.py says why those);
`ReasoningProcessor` goes last: it feeds the sampled tokens to the sequence's `ReasoningGate`, forces the tokens
that close the reasoning when its budget is spent, and lets the grammar processor in only once the answer begins.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from heylook_llm.backends.logprobs import Distribution, describe
from heylook_llm.backends.reasoning_gate import ReasoningGate
from heylook_llm.types import GenerationChunk


class LogprobCapture:
    """Keeps each position's raw logits (lazily: computed with the step) until the backend takes them, in order."""

    def __init__(self) -> None:
        self._pending: deque[Any] = deque()

    def __call__(self, tokens: Any, logits: Any) -> Any:
        self._pending.append(logits)
        return logits

    def take(self) -> Distribution:
        """The distribution of the next sampled token not yet taken."""
        logits = self._pending.popleft()
        return Distribution(np.array(logits.astype(mx.float32)))


class ReasoningProcessor:
    """The reasoning gate of one sequence, and its grammar processor (None: unconstrained) held back while the
    prompt-opened reasoning lasts."""

    def __init__(self, gate: ReasoningGate, piece: Callable[[int], bytes], grammar: Any = None) -> None:
        self.gate = gate
        self._piece = piece
        self._grammar = grammar
        self._seen = -1

    def __call__(self, tokens: Any, logits: Any) -> Any:
        count = int(tokens.size) if tokens is not None else 0
        if self._seen < 0:
            self._seen = count  # the prompt (and a reused cache's tokens): nothing generated yet
        elif count > self._seen:
            new = np.asarray(tokens).reshape(-1)[self._seen : count]
            self._seen = count
            for token in new.tolist():
                self.gate.accept(int(token), self._piece(int(token)))
        if self._grammar is not None and not self.gate.defers_constraint:
            logits = self._grammar(tokens, logits)
        forced = self.gate.forced_token()
        if forced is not None and forced < logits.shape[-1] and bool(mx.isfinite(logits[..., forced]).all()):
            only = mx.arange(logits.shape[-1]) == forced
            logits = mx.where(only, mx.zeros_like(logits), mx.full(logits.shape, -mx.inf, dtype=logits.dtype))
        return logits


def token_chunk(
    text: str,
    token: int,
    logprobs: Distribution | None,
    top: int | None,
    piece: Callable[[int], bytes],
    *,
    reasoning_open: bool = False,
) -> GenerationChunk:
    """The chunk of one sampled token: its text, id, log probability (when asked) and, on a sequence's first
    token, whether the prompt opened the reasoning."""
    chunk = GenerationChunk(text, token_count=1, token_ids=[token], reasoning_open=reasoning_open)
    if logprobs is not None:
        chunk.logprobs.append(describe(logprobs, token, top or 0, piece))
    return chunk
