"""The output-parsing stage: between a model's raw chunks and the dialects.

Each generation gets one parser, chosen per model and request (`output_parser_for`). A parser turns raw text
into what the dialects encode: answer text, reasoning deltas and tool-call deltas. Output is parsed once here and
encoded per dialect, so OpenAI, Ollama and later dialects see the same parsed result. Parsers for tool-call and
reasoning formats register in `PARSERS` by name; until one is chosen, text passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from heylook_llm.config.registry import ModelEntry
from heylook_llm.types import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    TokenLogprob,
    ToolCall,
)


class OutputParser(Protocol):
    def parse(self, chunk: GenerationChunk) -> GenerationChunk:
        """The chunk as the dialects see it; called once per chunk, in order. A parser that holds text back
        (a tool call not yet complete) releases it by the chunk with `finish_reason`."""
        ...


class PassThrough:
    """Text is answer text: for models with no tool-call or reasoning format, and requests that use neither."""

    def parse(self, chunk: GenerationChunk) -> GenerationChunk:
        return chunk


ParserFactory = Callable[[ModelEntry, GenerationRequest], OutputParser]

PARSERS: dict[str, ParserFactory] = {"none": lambda _entry, _request: PassThrough()}
"""Output formats by name (as a models.yaml setting or chat-template detection will name them)."""


def output_parser_for(entry: ModelEntry, request: GenerationRequest) -> OutputParser:
    """The parser for one generation. Every model passes text through until a format parser is registered for
    it; requests that would need one (tools, reasoning) are refused earlier by the feature check."""
    return PARSERS["none"](entry, request)


class CollectedOutput:
    """A whole generation read from its chunks: answer text, reasoning, complete tool calls, log probabilities,
    finish reason and figures (what a non-streamed response encodes)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.calls: list[ToolCall] = []
        self._call_parts: dict[int, list[str]] = {}
        self._call_heads: dict[int, tuple[str, str]] = {}
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: FinishReason | None = None
        self.stop_sequence: str | None = None
        self.stats: GenerationStats | None = None
        self.context_tokens: list[int] | None = None

    def add(self, chunk: GenerationChunk) -> None:
        self.parts.append(chunk.text)
        if chunk.reasoning:
            self.reasoning_parts.append(chunk.reasoning)
        for delta in chunk.tool_calls:
            if delta.id is not None or delta.name is not None:
                self._call_heads[delta.index] = (delta.id or "", delta.name or "")
            self._call_parts.setdefault(delta.index, []).append(delta.arguments)
        self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.stop_sequence = chunk.stop_sequence
            self.stats = chunk.stats or GenerationStats()
            self.context_tokens = chunk.context_tokens
            self.calls = [
                ToolCall(self._call_heads.get(i, ("", ""))[0], self._call_heads.get(i, ("", ""))[1], "".join(parts))
                for i, parts in sorted(self._call_parts.items())
            ]

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)
