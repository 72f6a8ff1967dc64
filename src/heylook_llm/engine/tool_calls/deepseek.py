"""DeepSeek calls: one section of marked calls. Written here with ASCII `|` and `_`: the markers' bars are
full-width (U+FF5C) and their spaces U+2581 (LOWER ONE EIGHTH BLOCK), see `_marker`:

    <|tool_calls_begin|><|tool_call_begin|>function<|tool_sep|>get_weather
    ```json
    {"city": "Paris"}
    ```<|tool_call_end|><|tool_calls_end|>               V3, V3-0324, R1, R1-0528 (a newline between calls)

    <|tool_calls_begin|><|tool_call_begin|>get_weather<|tool_sep|>{"city": "Paris"}<|tool_call_end|><|tool_calls_end|>
                                                         V3.1 (calls back to back)

The parser reads both; each format's grammar writes the syntax of the templates it detects (V3 fences the JSON).
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
    arguments_schema,
    json_lark,
    lark_literal,
    text_without,
)
from heylook_llm.types import ToolSpec


def _marker(words: str) -> str:
    return "<\uff5c" + words.replace(" ", "\u2581") + "\uff5c>"


BEGIN, END = _marker("tool calls begin"), _marker("tool calls end")
CALL_BEGIN, CALL_END, SEP = _marker("tool call begin"), _marker("tool call end"), _marker("tool sep")
FENCE = "```json"
_FENCED = re.compile(r"\s*(\S+?)\s*\n```(?:json)?\s*\n(.*?)\s*```\s*", re.DOTALL)


def _parse_call(body: str) -> ParsedCall:
    kind, sep, rest = body.partition(SEP)
    if not sep:
        return ParsedCall("", body.strip())
    fenced = _FENCED.fullmatch(rest)
    name, arguments = (fenced.group(1), fenced.group(2)) if fenced else (kind.strip(), rest.strip())
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return ParsedCall(name, arguments)
    return ParsedCall(name, json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else arguments)


class DeepSeekParser(ToolCallParser):
    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False  # within the calls section
        self._opening = ""  # the section's marker, until a call shows the section is real

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        out = Parsed()
        while True:
            if not self._inside:
                start = self._buffer.find(BEGIN)
                if start < 0:
                    keep = next((n for n in range(len(BEGIN) - 1, 0, -1) if self._buffer.endswith(BEGIN[:n])), 0)
                    out.content += self._buffer[: len(self._buffer) - keep]
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return out
                out.content += self._buffer[:start]
                self._buffer = self._buffer[start + len(BEGIN) :]
                self._inside, self._opening = True, BEGIN
            body = self._buffer.lstrip()
            if body.startswith(CALL_BEGIN):
                end = body.find(CALL_END)
                if end < 0:
                    return out
                out.calls.append(_parse_call(body[len(CALL_BEGIN) : end]))
                self._buffer, self._opening = body[end + len(CALL_END) :], ""
            elif body.startswith(END):
                self._buffer, self._inside = body[len(END) :], False
            elif CALL_BEGIN.startswith(body) or END.startswith(body):
                return out
            else:  # no call here after all: what was read stays visible as text
                out.content += self._opening
                self._inside = False

    def finish(self) -> Parsed:
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            # Calls that end the output without the closing marker are complete; a cut call is shown, not lost.
            return Parsed(content=self._opening + rest if self._opening or rest.strip() else "")
        return Parsed(content=rest)


class DeepSeekFormat(ToolFormat):
    name = "deepseek"
    description = "tool_calls_begin sections with fenced JSON arguments (DeepSeek V3, R1)"
    gap = "\\n"
    """Between two calls (Lark string body)."""

    def detects(self, template: str) -> bool:
        return BEGIN in template and FENCE in template

    def call_body(self, tool: ToolSpec, index: int, sep: str) -> str:
        """Lark for one tool's call between the call markers."""
        return f'"function" {sep} {json.dumps(tool.name + chr(10) + FENCE + chr(10))} args_{index} "\\n```"'

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        begin, end, call_begin, call_end, sep = (
            lark_literal(m, is_special) for m in (BEGIN, END, CALL_BEGIN, CALL_END, SEP)
        )
        repeat = (f' ("{self.gap}" call)*' if self.gap else "+") if parallel else ""
        named = " | ".join(f"call_{i}" for i in range(len(tools)))
        return "\n".join(
            [
                f"calls: {begin} call{repeat} {end}",
                f"call: {call_begin} ({named}) {call_end}",
                *(f"call_{i}: {self.call_body(tool, i, sep)}" for i, tool in enumerate(tools)),
                *(f"args_{i}: {json_lark(arguments_schema(tool))}" for i, tool in enumerate(tools)),
                f"TEXT: {text_without(begin, BEGIN, is_special)}",
            ]
        )

    def parser(self) -> ToolCallParser:
        return DeepSeekParser()


class DeepSeekV31Format(DeepSeekFormat):
    name = "deepseek_v3_1"
    description = "tool_calls_begin sections with bare JSON arguments (DeepSeek V3.1)"
    gap = ""

    def detects(self, template: str) -> bool:
        return BEGIN in template and FENCE not in template

    def call_body(self, tool: ToolSpec, index: int, sep: str) -> str:
        return f"{json.dumps(tool.name)} {sep} args_{index}"
