"""Token-list helpers shared by the backends: prefix caches, Ollama's `context` continuation, and the prompt-size check
made before tokenizing."""

from __future__ import annotations

from dataclasses import dataclass

from heylook_llm.errors import InvalidRequest, PromptTooLong


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


@dataclass(frozen=True, slots=True)
class PromptLimit:
    """The most text a prompt may have for a context window, checked before tokenizing.

    No token of a real vocabulary spans more than a few bytes of ordinary text, so a prompt longer than
    `bytes_per_token` bytes for each token of the window cannot fit; refusing it unread keeps a 50 MB body from
    costing seconds and gigabytes of tokenizing (and the model's time for everyone) only to be refused after."""

    context_length: int
    bytes_per_token: int

    @property
    def max_bytes(self) -> int:
        return self.context_length * self.bytes_per_token

    def error(self, prompt_bytes: int | None = None) -> PromptTooLong:
        return PromptTooLong(self.context_length, self.max_bytes, prompt_bytes)

    def check(self, *texts: str) -> None:
        """Raise PromptTooLong when the texts together are longer than `max_bytes` in UTF-8."""
        chars = sum(len(t) for t in texts)
        if chars * 4 <= self.max_bytes:  # a character is at most 4 bytes: no need to encode
            return
        if chars > self.max_bytes:
            raise self.error()
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        if size > self.max_bytes:
            raise self.error(size)
