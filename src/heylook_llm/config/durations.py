"""Keep-alive durations as Ollama writes them: Go duration strings ("10m", "1h30m"), or numbers of seconds.

A negative duration means "never expire" and is returned as `math.inf`; 0 means "unload as soon as idle". A
positive duration may be at most MAX_KEEP_ALIVE_SECONDS: longer ones (`"99999999999h"`, `1e300`) would put the
expiry past any date a clock or `/api/ps` can show.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")
MAX_KEEP_ALIVE_SECONDS = 100 * 365 * 24 * 3600.0
"""A hundred years (876,000h); use a negative duration to keep a model loaded for ever."""


def parse_duration_seconds(text: str) -> float:
    """Parse a Go duration ("1h30m", "-1m", "250ms", "0") or a bare number of seconds ("300")."""
    value = text.strip()
    if not value:
        raise ValueError("an empty string is not a duration")
    if _NUMBER.fullmatch(value):
        # Go rejects bare numbers other than 0; Ollama's OLLAMA_KEEP_ALIVE accepts them as seconds, so do we.
        return float(value)
    sign = 1.0
    if value[0] in "+-":
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    total = 0.0
    position = 0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ValueError(f"'{text}' is not a duration (examples: 30s, 10m, 1h30m, -1)")
    return sign * total


def keep_alive_seconds(value: str | float | int) -> float:
    """Seconds a model stays loaded after its last request: `math.inf` for negative values, 0 to unload at once."""
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration string or a number of seconds, not a boolean")
    seconds = parse_duration_seconds(value) if isinstance(value, str) else float(value)
    if math.isnan(seconds):
        raise ValueError("keep_alive is not a number")
    if seconds > MAX_KEEP_ALIVE_SECONDS:
        raise ValueError(
            f"'{value}' is longer than {format_duration(MAX_KEEP_ALIVE_SECONDS)} (100 years); "
            "use a negative duration such as -1 to keep the model loaded for ever"
        )
    return math.inf if seconds < 0 else seconds


def format_duration(seconds: float) -> str:
    """The inverse for messages and logs: 300 -> '5m', 5400 -> '1h30m', inf -> 'forever'."""
    if math.isinf(seconds):
        return "forever"
    whole = int(seconds)
    if whole != seconds or whole == 0:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts)
