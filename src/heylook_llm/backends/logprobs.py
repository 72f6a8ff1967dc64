"""Log probabilities of output tokens, computed the same way by every backend.

The values describe the model's own next-token distribution: a log-softmax over the whole vocabulary of the raw
logits, before logit bias, repetition penalties, grammar masks, temperature and top-k/top-p/min-p (vLLM's default
`raw_logprobs`, llama-server's default). So they do not depend on sampling settings, both backends report the same
numbers for the same weights, and a constrained or forced token shows how likely the model itself found it
(docs/logprobs.md).

Per token this costs one pass over the vocabulary for the normaliser (no float64 copy of it), and for a top list a
second pass that finds the best blocks of tokens first (a full partition of 150k logits takes milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from heylook_llm.types import TokenLogprob, TopLogprob

TokenPiece = Callable[[int], bytes]
"""A token's bytes (control tokens as their text), for the reported `token` and `bytes`."""

_BLOCK = 256
"""Top lists of large vocabularies look at the best blocks of this many tokens only."""


class Distribution:
    """The model's next-token distribution at one position: its raw logits and their log-sum-exp."""

    def __init__(self, logits: npt.NDArray[np.floating]) -> None:
        self.logits: npt.NDArray[np.float32] = np.asarray(logits, dtype=np.float32).reshape(-1)
        top = float(np.max(self.logits))
        # Summed in float64: exp of 150k float32 values would lose digits in a float32 sum.
        total = float(np.sum(np.exp(self.logits - np.float32(top)), dtype=np.float64))
        self.log_normaliser = top + math.log(total)

    def logprob(self, token: int) -> float:
        return float(self.logits[token]) - self.log_normaliser

    def everything(self) -> npt.NDArray[np.float64]:
        """Log probabilities of the whole vocabulary (for checks; the server never needs them all)."""
        values: npt.NDArray[np.float64] = self.logits.astype(np.float64) - self.log_normaliser
        return values

    def best(self, count: int) -> list[int]:
        """The `count` most likely token ids, most likely first (ties: lower id first)."""
        return top_tokens(self.logits, count)


def log_softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Log probabilities over the vocabulary, in float64."""
    return Distribution(logits).everything()


def top_tokens(values: npt.NDArray[np.floating], count: int) -> list[int]:
    """The `count` largest entries' indexes, largest first (ties: lower index first).

    Exact: every one of the `count` largest values lies in one of the `count` blocks with the largest maxima (a
    value in any other block has `count` block maxima, so `count` values, at or above it)."""
    size = values.shape[0]
    count = min(count, size)
    if count <= 0:
        return []
    candidates: npt.NDArray[np.intp]
    whole = size // _BLOCK
    if whole > 4 * count:
        maxima = values[: whole * _BLOCK].reshape(whole, _BLOCK).max(axis=1)
        blocks = np.argpartition(maxima, whole - count)[whole - count :]
        spans = (blocks[:, None] * _BLOCK + np.arange(_BLOCK)).reshape(-1)
        candidates = np.concatenate([spans, np.arange(whole * _BLOCK, size)])
    else:
        candidates = np.arange(size)
    picked = values[candidates]
    part = candidates[np.argpartition(picked, len(picked) - count)[len(picked) - count :]]
    order = np.lexsort((part, -values[part].astype(np.float64)))
    return [int(i) for i in part[order]]


def token_text(piece: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows its bytes escaped ("bytes:\\xe2\\x80"),
    as OpenAI writes such tokens (the `bytes` field has them exactly)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def describe(distribution: Distribution, token: int, top: int, piece: TokenPiece) -> TokenLogprob:
    """The chosen token's log probability and the `top` most likely alternatives at its position."""
    alternatives = []
    for t in distribution.best(top):
        data = piece(t)
        alternatives.append(TopLogprob(t, token_text(data), distribution.logprob(t), data))
    chosen = piece(token)
    return TokenLogprob(token, token_text(chosen), distribution.logprob(token), tuple(alternatives), chosen)
