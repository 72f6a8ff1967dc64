"""Neutral chunks -> Anthropic's named stream events (content blocks opened, filled with deltas and closed)."""

from __future__ import annotations

from typing import Any

from heylook_llm.api.anthropic.convert import stop_fields, usage
from heylook_llm.api.anthropic.dialect import named_event
from heylook_llm.types import GenerationChunk, GenerationStats, ToolCallDelta


class BlockEncoder:
    """Keeps the open content block: reasoning, answer text and each tool call get a block of their own, and a
    new kind of output closes the block before it."""

    def __init__(self) -> None:
        self._index = -1
        self._open: str | None = None
        """"thinking", "text" or "tool_use:N" (tool call N), or None."""

    def _start(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        events = self._stop()
        self._index += 1
        self._open = kind
        events.append(
            named_event(
                "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
            )
        )
        return events

    def _stop(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [named_event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return named_event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _thinking(self, text: str) -> list[bytes]:
        events = (
            []
            if self._open == "thinking"
            else self._start("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        )
        events.append(self._delta({"type": "thinking_delta", "thinking": text}))
        return events

    def _text(self, text: str) -> list[bytes]:
        events = [] if self._open == "text" else self._start("text", {"type": "text", "text": ""})
        events.append(self._delta({"type": "text_delta", "text": text}))
        return events

    def _tool_call(self, delta: ToolCallDelta) -> list[bytes]:
        kind = f"tool_use:{delta.index}"
        events: list[bytes] = []
        if self._open != kind:
            block = {"type": "tool_use", "id": delta.id or "", "name": delta.name or "", "input": {}}
            events = self._start(kind, block)
        if delta.arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": delta.arguments}))
        return events

    def chunk(self, chunk: GenerationChunk) -> list[bytes]:
        events: list[bytes] = []
        if chunk.reasoning:
            events += self._thinking(chunk.reasoning)
        if chunk.text:
            events += self._text(chunk.text)
        for delta in chunk.tool_calls:
            events += self._tool_call(delta)
        if chunk.finish_reason is not None:
            events += self._stop()
            stats = chunk.stats or GenerationStats()
            end = {
                "type": "message_delta",
                "delta": stop_fields(chunk.finish_reason, chunk.stop_sequence),
                "usage": usage(stats),
            }
            events.append(named_event("message_delta", end))
            events.append(named_event("message_stop", {"type": "message_stop"}))
        return events


PING = named_event("ping", {"type": "ping"})
