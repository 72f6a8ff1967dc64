"""Streaming splitters: output text in, (reasoning, answer text) out, whatever the boundaries of the pieces.

Text that might still turn out to be a marker is held back until it is clear, so a marker split across chunks
is never sent as text. Each splitter's `finish` releases what it holds at the end of the output.
"""

from __future__ import annotations

from heylook_llm.engine.reasoning.formats import HARMONY_ANALYSIS, HARMONY_END, ReasoningFormat

Split = tuple[str, str]
"""(reasoning, answer text) of one piece of output."""


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class TagSplitter:
    """Reasoning between a start and an end marker at the start of the output (`<think>...</think>`).

    Whitespace around the reasoning and at the start of the answer is dropped (templates put newlines there).
    Markers count only where they open the output and close the reasoning; anywhere else they are text.
    """

    def __init__(self, fmt: ReasoningFormat) -> None:
        self._start = fmt.start
        self._end = fmt.end
        self._state = "before"  # before, reasoning, answer
        self._buffer = ""
        self._lead = True
        """No non-space character of the current section has been sent yet."""

    @property
    def in_reasoning(self) -> bool:
        return self._state == "reasoning"

    def begin(self, opened: bool) -> None:
        """Called before the first piece: the prompt opened the reasoning, so the output starts inside it."""
        if opened and self._state == "before" and not self._buffer:
            self._state = "reasoning"

    def feed(self, text: str) -> Split:
        self._buffer += text
        reasoning, content = "", ""
        if self._state == "before":
            written = self._buffer.lstrip()
            if written.startswith(self._start):
                self._state, self._buffer = "reasoning", written[len(self._start) :]
            elif not written or self._start.startswith(written):
                return "", ""  # whitespace or the beginning of the start marker so far
            else:
                self._state, self._lead = "answer", False
                content, self._buffer = self._buffer, ""
                return "", content
        if self._state == "reasoning":
            reasoning = self._reasoning()
        if self._state == "answer":
            content = self._answer()
        return reasoning, content

    def _reasoning(self) -> str:
        if self._lead:
            self._buffer = self._buffer.lstrip()
        end = self._buffer.find(self._end)
        if end >= 0:
            out = self._buffer[:end].rstrip()
            self._buffer = self._buffer[end + len(self._end) :]
            self._state, self._lead = "answer", True
            return out
        cut = len(self._buffer) - partial_suffix(self._buffer, self._end)
        # Whitespace before a possible end marker waits: it is dropped if the marker follows.
        while cut > 0 and self._buffer[cut - 1].isspace():
            cut -= 1
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        if out:
            self._lead = False
        return out

    def _answer(self) -> str:
        if self._lead:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return ""
            self._lead = False
        out, self._buffer = self._buffer, ""
        return out

    def finish(self) -> Split:
        rest, self._buffer = self._buffer, ""
        if self._state == "reasoning":
            return rest.strip() if self._lead else rest.rstrip(), ""
        if self._state == "answer":
            return "", rest.lstrip() if self._lead else rest
        return "", rest


class HarmonySplitter:
    """Harmony (gpt-oss): each analysis message's body is reasoning; every other message passes on unchanged, its
    header included, for the Harmony parser that reads final text and calls (engine/tool_calls/harmony.py).

    The output is a series of `[<|start|>assistant]<|channel|>NAME<|message|>BODY<|end|>` messages.
    """

    _HEAD = "<|start|>assistant"

    def __init__(self) -> None:
        self._state = "head"  # head (a message may start), analysis (its body), other (passing on)
        self._buffer = ""

    @property
    def in_reasoning(self) -> bool:
        return self._state == "analysis"

    def begin(self, opened: bool) -> None:
        if opened and not self._buffer:
            self._state = "analysis"

    def feed(self, text: str) -> Split:
        self._buffer += text
        reasoning, content = "", ""
        while True:
            if self._state == "head":
                step = self._head()
                if step is None:
                    break
                content += step
            elif self._state == "analysis":
                piece, ended = self._body()
                reasoning += piece
                if not ended:
                    break
            else:
                piece, ended = self._other()
                content += piece
                if not ended:
                    break
        return reasoning, content

    def _head(self) -> str | None:
        """Read a message's start: analysis opens the reasoning; anything else passes on. None: not clear yet."""
        buf = self._buffer
        header = buf[len(self._HEAD) :] if buf.startswith(self._HEAD) else buf
        if header.startswith(HARMONY_ANALYSIS):
            self._buffer = header[len(HARMONY_ANALYSIS) :]
            self._state = "analysis"
            return ""
        if not buf or (self._HEAD + HARMONY_ANALYSIS).startswith(buf) or HARMONY_ANALYSIS.startswith(header):
            return None
        self._state = "other"
        return ""

    def _body(self) -> tuple[str, bool]:
        end = self._buffer.find(HARMONY_END)
        if end >= 0:
            out = self._buffer[:end]
            self._buffer = self._buffer[end + len(HARMONY_END) :]
            self._state = "head"
            return out, True
        cut = len(self._buffer) - partial_suffix(self._buffer, HARMONY_END)
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out, False

    def _other(self) -> tuple[str, bool]:
        end = self._buffer.find(HARMONY_END)
        if end >= 0:
            end += len(HARMONY_END)
            out, self._buffer = self._buffer[:end], self._buffer[end:]
            self._state = "head"
            return out, True
        cut = len(self._buffer) - partial_suffix(self._buffer, HARMONY_END)
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out, False

    def finish(self) -> Split:
        rest, self._buffer = self._buffer, ""
        return (rest, "") if self._state == "analysis" else ("", rest)
