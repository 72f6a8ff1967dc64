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
from heylook_llm.types import GenerationChunk, GenerationRequest


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
