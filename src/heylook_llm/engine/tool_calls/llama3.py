"""Llama 3.1, 3.2 and 3.3 JSON calls: the whole answer is the call object, with "parameters" (not "arguments"),

    {"name": "get_weather", "parameters": {"city": "Paris"}}

sometimes after `<|python_tag|>` (the marker of Meta's built-in tools), and sometimes several in a row separated by
`; `. Meta's templates render calls this way and tool results in the `ipython` role.

An answer is either calls or text, never both: text that only turns out not to be calls (a JSON answer, Python
after `<|python_tag|>`) is held until that is clear and then shown as it was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from heylook_llm.engine.tool_calls.base import (
    IsSpecial,
    Parsed,
    ParsedCall,
    ToolCallParser,
    ToolFormat,
    call_object_schema,
    json_lark,
)
from heylook_llm.types import ToolSpec

TAG = "<|python_tag|>"
_DECODER = json.JSONDecoder()
_GAP = re.compile(r"\s*(?:;\s*)?")


def _as_call(value: object) -> ParsedCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("parameters", value.get("arguments"))
    if isinstance(arguments, str):
        return ParsedCall(value["name"], arguments)
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(value["name"], json.dumps(arguments, ensure_ascii=False))


def _scan(text: str) -> tuple[str, list[ParsedCall]]:
    """("calls", them) when `text` is entirely call objects; ("text", []) when it can no longer become that;
    ("open", []) while it still might."""
    body = text.lstrip()
    if TAG.startswith(body):
        return "open", []
    body = body.removeprefix(TAG).lstrip()
    calls: list[ParsedCall] = []
    pos = 0
    while pos < len(body):
        if body[pos] != "{":
            return "text", []
        try:
            value, pos = _DECODER.raw_decode(body, pos)
        except json.JSONDecodeError:
            return "open", []  # unfinished (or not JSON at all: `finish` shows it as text)
        call = _as_call(value)
        if call is None:
            return "text", []
        calls.append(call)
        gap = _GAP.match(body, pos)
        pos = gap.end() if gap else pos
    return ("calls" if calls else "open"), calls


class Llama3Parser(ToolCallParser):
    def __init__(self) -> None:
        self._buffer = ""
        self._text = False

    def feed(self, text: str) -> Parsed:
        if self._text:
            return Parsed(content=text)
        self._buffer += text
        if _scan(self._buffer)[0] != "text":
            return Parsed()
        self._text = True
        out, self._buffer = self._buffer, ""
        return Parsed(content=out)

    def finish(self) -> Parsed:
        rest, self._buffer = self._buffer, ""
        status, calls = _scan(rest)
        if status == "calls":
            return Parsed(calls=calls)
        return Parsed(content=rest)  # text, or a call cut by max_tokens: shown rather than lost


class Llama3Format(ToolFormat):
    name = "llama3"
    description = '{"name": ..., "parameters": {...}} answers, optionally after <|python_tag|> (Llama 3.1-3.3)'

    def detects(self, template: str) -> bool:
        return TAG in template or ('"parameters"' in template and "ipython" in template)

    def start_rule(self, mode: str) -> str:
        # Nothing marks a call but its opening brace: the answer is either text or calls.
        return "start: TEXT | calls" if mode == "auto" else super().start_rule(mode)

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        tag = f"{TAG}? " if is_special(TAG) else ""
        repeat = ' ("; " call)*' if parallel else ""
        return "\n".join(
            [
                f"calls: {tag}call{repeat}",
                f"call: {json_lark(call_object_schema(tools, 'parameters'))}",
                # Text may not open like a call (a brace, or the tag as text): an answer is one or the other.
                r"TEXT: /(?s:.+)/ & ~/\s*(\{|<\|python_tag\|>)(?s:.*)/",
            ]
        )

    def parser(self) -> ToolCallParser:
        return Llama3Parser()
