"""The sequence slots of one llama.cpp context and the prefix cache over them.

Each slot is one KV stream (`kv_unified` off) and remembers the tokens held in it. A request claims the free slot
whose cached tokens share the longest prefix with its prompt, and may copy a longer prefix from another slot.
All methods run on the model's worker thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from heylook_llm.backends.tokens import common_prefix
from heylook_llm.errors import GenerationFailed

MIN_BORROWED_TOKENS = 32
"""Before a prompt's evaluation time has been measured: the shortest prefix worth copying from another slot."""

STREAM_COPY_BYTES_PER_SECOND = 8e9
"""A CPU copies memory at roughly this rate (10 GB/s measured on a small 2-core machine): the cost of copying
one slot's KV stream, weighed against evaluating the prefix again."""


@dataclass(slots=True)
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)
    """Tokens whose keys and values are in this slot's part of the KV cache, in order; one entry per position
    (a negative id where an image is)."""
    busy: bool = False
    last_used: float = 0.0


class SlotTable:
    def __init__(self, memory: Any, count: int, prefix_cache: bool, stream_copy_seconds: float | None = None) -> None:
        self._mem = memory
        self.prefix_cache = prefix_cache
        self.slots = [Slot(seq_id=i) for i in range(count)]
        self.stream_copy_seconds = stream_copy_seconds
        """What copying one slot's KV to another costs: 0 where the slots share one pool of cells (unified KV,
        a copy only tags cells), None where unknown."""
        self.token_seconds: float | None = None
        """Measured time to evaluate one prompt token (the engine keeps it current); None until measured."""

    def borrow_pays(self, gained_tokens: int) -> bool:
        """Whether copying another slot's cache to reuse `gained_tokens` more prompt tokens costs less than
        evaluating them."""
        if gained_tokens <= 0:
            return False
        if self.stream_copy_seconds == 0.0:
            return True
        if self.stream_copy_seconds is None or self.token_seconds is None:
            return gained_tokens >= MIN_BORROWED_TOKENS
        return gained_tokens * self.token_seconds > self.stream_copy_seconds

    def note_evaluation(self, tokens: int, seconds: float) -> None:
        """A decode of `tokens` tokens (mostly prompt) took `seconds`: update the per-token estimate."""
        if tokens < 8 or seconds <= 0.0:
            return  # a step of a few tokens is mostly fixed cost, not per-token work
        sample = seconds / tokens
        self.token_seconds = sample if self.token_seconds is None else 0.7 * self.token_seconds + 0.3 * sample

    @property
    def free(self) -> int:
        return sum(1 for s in self.slots if not s.busy)

    def claim(self, prompt: list[int]) -> tuple[Slot, int]:
        """The free slot for `prompt` and how many leading prompt tokens its KV cache holds (its own, or copied
        from another slot); `keep` then trims the slot to what the caller reuses and marks it busy."""
        matches = {s.seq_id: common_prefix(s.cached, prompt) for s in self.slots} if self.prefix_cache else {}
        slot = self._pick(matches, prompt)
        return slot, self._borrow(slot, matches) if self.prefix_cache else 0

    def keep(self, slot: Slot, reuse: int) -> int:
        """Drop what `slot` holds past its first `reuse` tokens and mark it busy; returns the tokens kept (0
        where llama.cpp cannot cut the stream there)."""
        if not llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, reuse, -1):
            reuse = 0
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.cached = slot.cached[:reuse]
        slot.busy = True
        slot.last_used = time.monotonic()
        return reuse

    def release(self, slot: Slot) -> None:
        """The slot is free again; its cache stays for later prompts unless the prefix cache is off."""
        slot.busy = False
        slot.last_used = time.monotonic()
        if not self.prefix_cache:
            self.clear(slot)

    def clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.cached = []

    def _pick(self, matches: dict[int, int], prompt: list[int]) -> Slot:
        """The free slot sharing the longest prefix with `prompt`, unless taking it would throw away most of a
        cached conversation for a short match (a shared chat-template header, say): then an empty or the least
        recently used slot, so that the conversation can come back to its cache."""
        free = [s for s in self.slots if not s.busy]
        if not free:
            raise GenerationFailed("no free sequence slot (the worker admitted more requests than slots)")
        if not self.prefix_cache:
            return min(free, key=lambda s: s.last_used)
        best = max(free, key=lambda s: (matches[s.seq_id], -s.last_used))
        match = matches[best.seq_id]
        # Worth taking: most of the slot's cache is kept, or the whole prompt (bar its last token) is found.
        if 2 * match >= len(best.cached) or match >= len(prompt) - 1:
            return best
        return min(free, key=lambda s: (len(s.cached) > 0, s.last_used))

    def _borrow(self, slot: Slot, matches: dict[int, int]) -> int:
        """Copy a longer matching prefix from another slot's KV cache (busy or free) into `slot` where that costs
        less than evaluating it; returns the tokens now reusable. Requests submitted together with a common
        prefix (batch groups, `n` choices) then evaluate it once instead of once per slot, and a new conversation
        put in an empty slot (to keep another slot's conversation) still reuses the shared chat-template header."""
        reuse = matches[slot.seq_id]
        donor = max((s for s in self.slots if s is not slot), key=lambda s: matches[s.seq_id], default=None)
        if donor is None or not self.borrow_pays(matches[donor.seq_id] - reuse):
            return reuse
        match = matches[donor.seq_id]
        # llama.cpp copies across streams only whole: copy the donor's stream, then drop what lies past the
        # shared prefix. The copy runs before the next decode, and a busy donor only appends past `match`, so
        # the copied prefix is intact.
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, match, -1):
            self.clear(slot)
            return 0
        slot.cached = donor.cached[:match]
        return match
