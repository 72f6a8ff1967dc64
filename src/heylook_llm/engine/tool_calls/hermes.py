"""Hermes-style calls, used by Qwen 2.5, Qwen 3, Hermes 2/3 and many fine-tunes:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block per call, text (if any) before the first block.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from heylook_llm.engine.tool_calls.base import (
    IsSpecial,
    Parsed,
    ParsedCall,
    ToolCallParser,
    ToolFormat,
    call_object_schema,
    json_lark,
    lark_literal,
    text_without,
)
from heylook_llm.types import ToolSpec

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


class HermesParser(ToolCallParser):
    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self._after_call = False

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        out = Parsed()
        while True:
            if self._after_call:
                # The newline between calls (or after the last one) is layout, wherever the chunks split.
                if not self._buffer:
                    return out
                self._buffer = self._buffer.lstrip("\n")
                if not self._buffer:
                    return out
                self._after_call = False
            if not self._inside:
                start = self._buffer.find(OPEN)
                if start < 0:
                    # Hold back a tail that could be the beginning of the marker.
                    keep = _partial_suffix(self._buffer, OPEN)
                    out.content += self._buffer[: len(self._buffer) - keep]
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return out
                out.content += self._buffer[:start]
                self._buffer = self._buffer[start + len(OPEN) :]
                self._inside = True
            end = self._buffer.find(CLOSE)
            if end < 0:
                return out
            out.calls.append(_parse_call(self._buffer[:end]))
            self._buffer = self._buffer[end + len(CLOSE) :]
            self._inside = False
            self._after_call = True

    def finish(self) -> Parsed:
        rest, self._buffer = self._buffer, ""
        if self._inside:
            # An unterminated call (cut by max_tokens): keep it visible as text rather than lose it.
            self._inside = False
            return Parsed(content=OPEN + rest)
        return Parsed(content=rest)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _parse_call(body: str) -> ParsedCall:
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return ParsedCall("", body.strip())
    if not isinstance(value, dict):
        return ParsedCall("", body.strip())
    arguments = value.get("arguments", value.get("parameters", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ParsedCall(str(value.get("name", "")), text)


class HermesFormat(ToolFormat):
    name = "hermes"
    description = "<tool_call>{json}</tool_call> blocks (Qwen 2.5, Qwen 3, Hermes)"

    def detects(self, template: str) -> bool:
        return OPEN in template

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        open_, close = lark_literal(OPEN, is_special), lark_literal(CLOSE, is_special)
        repeat = ' ("\\n" call)*' if parallel else ""
        return "\n".join(
            [
                f"calls: call{repeat}",
                f'call: {open_} "\\n" call_json "\\n" {close}',
                f"call_json: {json_lark(call_object_schema(tools))}",
                f"TEXT: {text_without(open_, OPEN, is_special)}",
            ]
        )

    def parser(self) -> ToolCallParser:
        return HermesParser()
