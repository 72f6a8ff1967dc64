"""Log probabilities of output tokens, computed the same way by every backend.

The values describe the model's own next-token distribution: a log-softmax over the whole vocabulary of the raw
logits, before logit bias, repetition penalties, grammar masks, temperature and top-k/top-p/min-p (vLLM's default
`raw_logprobs`, llama-server's default). So they do not depend on sampling settings, both backends report the same
numbers for the same weights, and a constrained or forced token shows how likely the model itself found it
(docs/logprobs.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from heylook_llm.types import TokenLogprob, TopLogprob

TokenPiece = Callable[[int], bytes]
"""A token's bytes (control tokens as their text), for the reported `token` and `bytes`."""


def log_softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Log probabilities over the vocabulary, in float64 (so that exp sums to 1 within 1e-9)."""
    values = logits.astype(np.float64, copy=False)
    top = float(np.max(values))
    shifted = values - top
    result: npt.NDArray[np.float64] = shifted - np.log(np.sum(np.exp(shifted)))
    return result


def token_text(piece: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows its bytes escaped ("bytes:\\xe2\\x80"),
    as OpenAI writes such tokens (the `bytes` field has them exactly)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def top_tokens(logprobs: npt.NDArray[np.float64], count: int) -> list[int]:
    """The `count` most likely token ids, most likely first (ties: lower id first)."""
    if count <= 0:
        return []
    count = min(count, logprobs.shape[0])
    part = np.argpartition(-logprobs, count - 1)[:count]
    order = np.lexsort((part, -logprobs[part]))
    return [int(i) for i in part[order]]


def describe(logprobs: npt.NDArray[np.float64], token: int, top: int, piece: TokenPiece) -> TokenLogprob:
    """The chosen token's log probability and the `top` most likely alternatives at its position."""
    alternatives = tuple(
        TopLogprob(t, token_text(piece(t)), float(logprobs[t]), piece(t)) for t in top_tokens(logprobs, top)
    )
    chosen = piece(token)
    return TokenLogprob(token, token_text(chosen), float(logprobs[token]), alternatives, chosen)
