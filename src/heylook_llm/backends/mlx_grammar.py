"""Constrained decoding for the MLX backends: an mlx-lm logits processor that applies a sequence's grammar mask
(backends/constrained.py), in the one-at-a-time and the batched paths alike."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from heylook_llm.backends.constrained import TokenMask
from heylook_llm.errors import GenerationFailed


class GrammarProcessor:
    """Called by mlx-lm before each sample with the sequence's tokens so far: the tokens that arrived since the
    last call are fed to the grammar, then every token it forbids gets -inf.

    It never raises inside mlx-lm (an exception there would end every sequence of a batch): a grammar that cannot
    go on allows only end-of-sequence and records `failed`, which the backend reports for this sequence alone.
    """

    def __init__(self, mask: TokenMask, end_token: int, vocab_size: int) -> None:
        self._mask = mask
        self._end = end_token
        self._vocab_size = vocab_size
        self._seen = -1
        self.failed: GenerationFailed | None = None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        count = int(tokens.size) if tokens is not None else 0
        if self._seen < 0:
            self._seen = count  # the prompt (and a reused cache's tokens): nothing generated yet
        elif count > self._seen and self.failed is None:
            new = np.asarray(tokens).reshape(-1)[self._seen : count]
            self._seen = count
            try:
                for token in new.tolist():
                    if token != self._end:
                        self._mask.accept(int(token))
            except GenerationFailed as exc:
                self.failed = exc
        if self.failed is None:
            try:
                allowed = self._mask.allowed()
                if not allowed.any():
                    raise GenerationFailed("the output constraint allows no token here; the sequence cannot go on")
            except GenerationFailed as exc:
                self.failed = exc
        if self.failed is not None:
            allowed = np.zeros(self._vocab_size, dtype=np.bool_)
            allowed[self._end] = True
        width = logits.shape[-1]
        if allowed.shape[0] < width:
            allowed = np.concatenate([allowed, np.zeros(width - allowed.shape[0], dtype=np.bool_)])
        keep = mx.array(allowed[:width])
        return mx.where(keep, logits, mx.array(-mx.inf, dtype=logits.dtype))
