"""gpt-oss Harmony: the answer is a series of messages, each `{header}<|message|>{body}` ending in `<|end|>`, and the
last in `<|return|>` (an answer) or `<|call|>` (a function call). Calls go on the commentary channel, the function
named as the recipient:

    <|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary
    to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>

(one line in the output). The prompt ends in `<|start|>assistant`, so the output starts at the first message's
channel, or at ` to=functions.NAME` where the recipient is put in the role part of the header, as the Hugging Face
template does. Final-channel text and commentary without a recipient (a preamble for the user) are content;
analysis (the chain of thought) and calls to built-in tools are dropped. `<|call|>` and `<|return|>` are stop tokens
that a backend may not pass on, so a call still open at the end is complete when its arguments are a JSON object.
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
)
from heylook_llm.types import ToolSpec

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, CALL, RETURN = "<|constrain|>", "<|call|>", "<|return|>"
_ENDS = (END, CALL, RETURN, START)
_OPENS = (START, CHANNEL)
_ROLE_RECIPIENT = (" to=", "to=")
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")


def _partial(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that could begin one of `markers`."""
    return max((n for m in markers for n in range(1, min(len(m), len(text) + 1)) if text.endswith(m[:n])), default=0)


def _call(name: str, body: str) -> ParsedCall | None:
    """The call when `body` is a whole JSON object."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    return ParsedCall(name, json.dumps(value, ensure_ascii=False)) if isinstance(value, dict) else None


class HarmonyParser(ToolCallParser):
    def __init__(self) -> None:
        self._buffer = ""
        self._state = "text"  # text (between messages), header, body
        self._fresh = True  # nothing read yet: the output may open with the recipient
        self._between = False  # after a message: whitespace before the next one is dropped
        self._kind = ""  # of the body: content, drop, call
        self._name = ""
        self._raw = ""  # a call's header, to show a cut call as it was written

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        out = Parsed()
        while self._step(out):
            pass
        return out

    def _step(self, out: Parsed) -> bool:
        """Read what the buffer allows in the current state; True when the state changed (read on)."""
        if self._state == "text":
            return self._text(out)
        if self._state == "header":
            return self._header()
        return self._body(out)

    def _text(self, out: Parsed) -> bool:
        buf = self._buffer
        if self._fresh:
            if any(p.startswith(buf) for p in _ROLE_RECIPIENT):
                return False
            self._fresh = False
            if buf.startswith(_ROLE_RECIPIENT):
                self._state = "header"
                return True
        opens = [i for i in (buf.find(m) for m in _OPENS) if i >= 0]
        cut = min(opens) if opens else len(buf) - _partial(buf, _OPENS)
        if self._between and not buf[:cut].strip():
            if not opens:
                return False  # whitespace so far: kept until it is clear whether a message follows
        else:
            out.content += buf[:cut]
            self._between = False
        self._buffer = buf[cut:]
        self._state = "header" if opens else "text"
        return bool(opens)

    def _header(self) -> bool:
        end = self._buffer.find(MESSAGE)
        if end < 0:
            return False
        header = self._buffer[:end]
        recipient, channel = _RECIPIENT.search(header), _CHANNEL.search(header)
        if recipient:
            self._kind = "call" if recipient.group(1).startswith("functions.") else "drop"
            self._name = recipient.group(1).removeprefix("functions.")
        else:
            self._kind = "drop" if channel and channel.group(1) == "analysis" else "content"
        end += len(MESSAGE)
        self._raw, self._buffer, self._state = self._buffer[:end], self._buffer[end:], "body"
        return True

    def _body(self, out: Parsed) -> bool:
        buf = self._buffer
        ends = [(i, m) for i, m in ((buf.find(m), m) for m in _ENDS) if i >= 0]
        if not ends:
            if self._kind != "call":  # a call's arguments are held whole; other text goes out (or away) as it comes
                cut = len(buf) - _partial(buf, _ENDS)
                out.content += buf[:cut] if self._kind == "content" else ""
                self._buffer = buf[cut:]
            return False
        end, marker = min(ends)
        if self._kind == "content":
            out.content += buf[:end]
        elif self._kind == "call":
            out.calls.append(_call(self._name, buf[:end]) or ParsedCall(self._name, buf[:end].strip()))
        self._buffer = buf[end:] if marker == START else buf[end + len(marker) :]
        self._state, self._between = "text", True
        return True

    def finish(self) -> Parsed:
        rest, state, self._buffer, self._state = self._buffer, self._state, "", "text"
        if state == "text":
            return Parsed(content="" if self._between and not rest.strip() else rest)
        if state == "header":  # a call cut in its header is shown as written; other headers say nothing yet
            return Parsed(content=rest if "to=functions." in rest else "")
        if self._kind == "content":
            return Parsed(content=rest)
        if self._kind == "drop":
            return Parsed()
        call = _call(self._name, rest)
        return Parsed(calls=[call]) if call else Parsed(content=self._raw + rest)


class HarmonyFormat(ToolFormat):
    name = "harmony"
    description = "Harmony messages: calls on the commentary channel to=functions.NAME (gpt-oss)"

    def detects(self, template: str) -> bool:
        return CHANNEL in template

    def start_rule(self, mode: str) -> str:
        # The model may think on the analysis channel first; the answer is a final message or calls.
        return {
            "none": "start: analysis? final",
            "auto": "start: analysis? (final | calls)",
            "required": "start: analysis? calls",
        }[mode]

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        start, end, message, channel, constrain, call, return_ = (
            lark_literal(m, is_special) for m in (START, END, MESSAGE, CHANNEL, CONSTRAIN, CALL, RETURN)
        )
        named = " | ".join(
            f'{json.dumps(tool.name)} " " {constrain} "json" {message} args_{i}' for i, tool in enumerate(tools)
        )
        if is_special(END):  # gpt-oss: text cannot spell a special token, so a message's text ends at the marker
            thought, body, text = f"TEXT {end}", f"TEXT {return_}?", "/(?s:.+)/"
        else:  # markers as text: the lexer is greedy, so the thought is one terminal up to the first <|end|>
            thought, body, text = "THOUGHT", "TEXT", r"/(?s:.+)/ & ~/(?s:.*<\|[a-z]+\|>.*)/"
        return "\n".join(
            [
                f'calls: call ({start} "assistant" call)*' if parallel else "calls: call",
                f'call: {channel} "commentary to=functions." ({named}) {call}',
                *(f"args_{i}: {json_lark(arguments_schema(tool))}" for i, tool in enumerate(tools)),
                f'analysis: {channel} "analysis" {message} {thought} {start} "assistant"',
                f'final: {channel} "final" {message} {body}',
                f"TEXT: {text}",
                r"THOUGHT: /(?s:.*<\|end\|>)/ & ~/(?s:.*<\|end\|>.+)/",
            ]
        )

    def parser(self) -> ToolCallParser:
        return HarmonyParser()
