"""Text assembly shared by backends: incremental UTF-8 decoding and stop strings across token boundaries."""

from __future__ import annotations

import codecs


class Utf8Assembler:
    """Turns token byte pieces into text without ever splitting a multi-byte character.

    Incomplete sequences are held until the next piece; invalid bytes become U+FFFD.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Holds back text that could be the start of a stop string; the stop string itself is never emitted.

    `matched` is the stop string that ended the text (the one that starts first; of those, the one listed first),
    for dialects that report it (Anthropic's `stop_sequence`).
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.matched: str | None = None

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def feed(self, text: str) -> str:
        """Returns the text that is safe to emit now; sets `stopped` when a stop string matched."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        self._pending += text
        first = -1
        matched: str | None = None
        for stop in self._stops:
            at = self._pending.find(stop)
            if at != -1 and (first == -1 or at < first):
                first, matched = at, stop
        if matched is not None:
            out = self._pending[:first]
            self._pending = ""
            self.matched = matched
            return out
        keep = self._longest_stop_prefix_suffix()
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return "" if self.stopped else out

    def _longest_stop_prefix_suffix(self) -> int:
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:length]):
                    best = length
                    break
        return best
