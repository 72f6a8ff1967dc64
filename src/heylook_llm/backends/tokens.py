"""Token-list helpers shared by the backends' prefix caches and Ollama's `context` continuation."""

from __future__ import annotations

from heylook_llm.errors import InvalidRequest


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share.

    Slice comparisons run in C: a whole match is one comparison, and a mismatch is found by halving, so a
    request checking a few thousand cached tokens in every slot costs microseconds rather than a millisecond.
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low]; the first difference lies before `high`
    while high - low > 1:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low


def checked_context(context: list[int] | None, vocab_size: int) -> list[int]:
    """Token ids a client sent back (Ollama's `context`), refused if any lies outside the vocabulary."""
    if not context:
        return []
    for token in context:
        if not 0 <= token < vocab_size:
            raise InvalidRequest(
                f"context holds token id {token}, outside the vocabulary (0..{vocab_size - 1})", param="context"
            )
    return list(context)
