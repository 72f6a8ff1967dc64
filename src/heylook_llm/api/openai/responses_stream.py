"""The Responses API's typed stream: parsed chunks become `response.*` SSE events, items opened and closed in
order (reasoning, message text, function calls), with one sequence number across the stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from heylook_llm.api.openai.responses_convert import (
    function_call_item,
    message_item,
    new_id,
    output_text,
    reasoning_item,
    status_of,
)
from heylook_llm.types import FinishReason, GenerationChunk, GenerationStats, ToolCall

ResponseBuilder = Callable[[str, list[dict[str, Any]], GenerationStats | None, dict[str, str] | None], dict[str, Any]]
"""(status, output items, stats or None, error or None) -> the Response object."""


class _OpenItem:
    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind
        self.id = item_id
        self.index = index
        self.text: list[str] = []
        self.call: ToolCall | None = None


class ResponseEvents:
    """Encodes one response's stream. OpenAI's Responses stream has named events and no `[DONE]` line."""

    def __init__(self, build: ResponseBuilder) -> None:
        self._build = build
        self._sequence = 0
        self._open: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}
        self.output: list[dict[str, Any]] = []
        """Finished output items, in order."""
        self.final: dict[str, Any] | None = None
        self._indices: dict[str, int] = {}

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return b"event: " + kind.encode("ascii") + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def start(self) -> list[bytes]:
        snapshot = self._build("in_progress", [], None, None)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _added(self, item: dict[str, Any], index: int) -> bytes:
        return self._event("response.output_item.added", output_index=index, item=item)

    def _open_item(self, kind: str) -> list[bytes]:
        if self._open is not None and self._open.kind == kind:
            return []
        events = self._close_open("completed")
        index = len(self.output) + len(self._calls)
        if kind == "reasoning":
            item = _OpenItem(kind, new_id("rs"), index)
            events.append(self._added(reasoning_item(item.id, "", "in_progress"), index))
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = _OpenItem(kind, new_id("msg"), index)
            events.append(self._added(message_item(item.id, None, "in_progress"), index))
            part = output_text("")
        events.append(
            self._event("response.content_part.added", item_id=item.id, output_index=index, content_index=0, part=part)
        )
        self._open = item
        return events

    def _close_open(self, status: str) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        self._open = None
        text = "".join(item.text)
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        if item.kind == "reasoning":
            done = reasoning_item(item.id, text, status)
            events = [
                self._event("response.reasoning_text.done", **where, text=text),
                self._event("response.content_part.done", **where, part={"type": "reasoning_text", "text": text}),
            ]
        else:
            done = message_item(item.id, text, status)
            events = [
                self._event("response.output_text.done", **where, text=text, logprobs=[]),
                self._event("response.content_part.done", **where, part=output_text(text)),
            ]
        self.output.append(done)
        self._indices[item.id] = item.index
        events.append(self._event("response.output_item.done", output_index=item.index, item=done))
        return events

    def chunk(self, chunk: GenerationChunk) -> list[bytes]:
        events: list[bytes] = []
        if chunk.reasoning:
            events += self._open_item("reasoning")
            assert self._open is not None
            self._open.text.append(chunk.reasoning)
            where = {"item_id": self._open.id, "output_index": self._open.index, "content_index": 0}
            events.append(self._event("response.reasoning_text.delta", **where, delta=chunk.reasoning))
        if chunk.text:
            events += self._open_item("message")
            assert self._open is not None
            self._open.text.append(chunk.text)
            where = {"item_id": self._open.id, "output_index": self._open.index, "content_index": 0}
            events.append(self._event("response.output_text.delta", **where, delta=chunk.text, logprobs=[]))
        for delta in chunk.tool_calls:
            call = self._calls.get(delta.index)
            if call is None:
                events += self._close_open("completed")
                call = _OpenItem("function_call", new_id("fc"), len(self.output) + len(self._calls))
                call.call = ToolCall(delta.id or new_id("call"), delta.name or "", "")
                self._calls[delta.index] = call
                events.append(self._added(function_call_item(call.id, call.call, "in_progress"), call.index))
            if delta.arguments:
                call.text.append(delta.arguments)
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=call.id,
                        output_index=call.index,
                        delta=delta.arguments,
                    )
                )
        return events

    def finish(self, reason: FinishReason | None, stats: GenerationStats) -> list[bytes]:
        """Close every item and send the final response (`response.completed`, or `response.incomplete` when the
        output reached max_output_tokens, as OpenAI sends)."""
        status = status_of(reason)
        # An empty answer is still one (empty) message, as the non-streamed response has.
        empty = self._open is None and not self.output and not self._calls
        events = self._open_item("message") if empty else []
        events += self._close_open(status)
        for call in sorted(self._calls.values(), key=lambda c: c.index):
            assert call.call is not None
            done = function_call_item(call.id, ToolCall(call.call.id, call.call.name, "".join(call.text)), status)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call.id,
                    output_index=call.index,
                    name=done["name"],
                    arguments=done["arguments"],
                )
            )
            events.append(self._event("response.output_item.done", output_index=call.index, item=done))
            self.output.append(done)
            self._indices[call.id] = call.index
        self._calls.clear()
        # Text that came after a call closes before the calls do: the output follows the items' indices.
        self.output.sort(key=lambda item: self._indices[item["id"]])
        self.final = self._build(status, self.output, stats, None)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.final))
        return events

    def fail(self, code: str, message: str, param: str | None) -> list[bytes]:
        """After the 200: an `error` event, then `response.failed` with what was finished."""
        error = self._event("error", code=code, message=message, param=param)
        failed = self._build("failed", self.output, None, {"code": "server_error", "message": message})
        return [error, self._event("response.failed", response=failed)]
