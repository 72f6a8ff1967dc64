"""Token-list helpers shared by the backends' prefix caches and Ollama's `context` continuation."""

from __future__ import annotations

from heylook_llm.errors import InvalidRequest


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
