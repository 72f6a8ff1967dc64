"""One sequence's reasoning section, followed token by token in the backend: where the reasoning starts and ends,
how many tokens it has taken, and when a budget closes it.

The engine names the markers (`ReasoningControl.start_marker`, `end_marker`, `close_text`); the backend feeds every
sampled token's bytes here (control tokens rendered as their text, since markers such as Harmony's are control
tokens). When the budget is spent the gate asks for the tokens of `close_text` one by one, and the backend makes
each the only token its sampler can pick, so the model goes on to answer. An output constraint waits for the answer
when the prompt opened the reasoning (`defers_constraint`): the reasoning itself is free text.

The engine's output parser splits the text at the same markers (engine/reasoning); this gate only steers.
"""

from __future__ import annotations

import enum
from collections import deque

from heylook_llm.types import ReasoningControl


class Section(enum.Enum):
    BEFORE = "before"
    """Nothing written yet that starts or rules out a reasoning section."""
    REASONING = "reasoning"
    ANSWER = "answer"


def prompt_opens_reasoning(prompt: str, control: ReasoningControl | None) -> bool:
    """Whether a prompt ends inside the reasoning section (a template that writes `<think>` after the assistant
    header, as DeepSeek-R1's and QwQ's do), so the output starts as reasoning."""
    if control is None or not control.start_marker:
        return False
    return prompt.rstrip().endswith(control.start_marker)


class ReasoningGate:
    def __init__(self, control: ReasoningControl, close_tokens: list[int], *, opened: bool) -> None:
        self._start = control.start_marker.encode("utf-8")
        self._end = control.end_marker.encode("utf-8")
        self._budget = control.max_tokens
        self._close = list(close_tokens)
        self._forcing: deque[int] = deque()
        self._closing = False
        self._opened = opened
        self.section = Section.REASONING if opened else Section.BEFORE
        self._text = bytearray()
        """BEFORE: the output so far; REASONING: its last bytes, enough to find the end marker."""
        self.reasoning_tokens = 0
        self.closed_by_budget = False

    @property
    def defers_constraint(self) -> bool:
        """An output constraint must wait: the prompt opened the reasoning and the answer has not begun."""
        return self._opened and self.section is not Section.ANSWER

    def forced_token(self) -> int | None:
        """The token the sequence must take next (closing the reasoning), or None to sample freely."""
        if (
            not self._closing
            and self.section is Section.REASONING
            and self._budget is not None
            and self.reasoning_tokens >= self._budget
        ):
            self._closing = True
            self.closed_by_budget = True
            self._forcing.extend(self._close)
        return self._forcing[0] if self._forcing else None

    def accept(self, token: int, piece: bytes) -> None:
        """Follow one sampled token (`piece`: its bytes, control tokens as their text)."""
        if self._forcing:
            if token == self._forcing[0]:
                self._forcing.popleft()
            else:  # the sampler went its own way (nothing else should make it): stop forcing
                self._forcing.clear()
        if self.section is Section.BEFORE:
            self._text += piece
            written = bytes(self._text).lstrip()
            if written.startswith(self._start):
                self.section = Section.REASONING
                self._text = bytearray(written[len(self._start) :])
                self._look_for_end()
            elif written and not self._start.startswith(written):
                self.section = Section.ANSWER
                self._text.clear()
            return
        if self.section is Section.REASONING:
            self.reasoning_tokens += 1
            self._text += piece
            self._look_for_end()

    def _look_for_end(self) -> None:
        if self._end and self._end in self._text:
            self.section = Section.ANSWER
            self._text.clear()
            return
        # Only the bytes that could begin the end marker matter from here on.
        keep = max(len(self._end) - 1, 0)
        if len(self._text) > keep:
            del self._text[: len(self._text) - keep]
