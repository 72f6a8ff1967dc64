"""Provider-neutral requests and results shared by the API dialects, the engine and the backends.

Nothing here imports the rest of the package: every layer may use these types.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal


class FinishReason(enum.StrEnum):
    STOP = "stop"
    """The model produced an end-of-sequence token or a stop string matched."""
    LENGTH = "length"
    """`max_tokens` was reached, or the context window filled up."""
    CANCELLED = "cancelled"
    """The client went away; the request was abandoned."""


@dataclass(slots=True, frozen=True)
class ImageData:
    """One image of a chat message, decoded, checked and resized by the API layer, then encoded again.

    Encoded bytes rather than pixels: they are what both backends' loaders take (mlx-vlm's processors open them
    with Pillow; llama.cpp's mtmd reads encoded buffers), they are compact, hashable and need no imaging library
    in this module.
    """

    data: bytes
    mime_type: str
    """"image/jpeg" or "image/png" (PNG when the image keeps an alpha channel)."""
    width: int
    height: int


@dataclass(slots=True)
class ChatMessage:
    role: str
    content: str
    images: list[ImageData] = field(default_factory=list)
    """Images of this message, in order; chat templates place them before the message's text."""


@dataclass(slots=True)
class SamplingOverrides:
    """Sampling values where `None` means "not set here": resolved request > model config > server default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    logit_bias: dict[int, float] | None = None

    def merged_over(self, lower: SamplingOverrides) -> SamplingOverrides:
        """Values set here win; unset ones come from `lower`."""
        values = {}
        for f in fields(self):
            mine = getattr(self, f.name)
            values[f.name] = mine if mine is not None else getattr(lower, f.name)
        return SamplingOverrides(**values)


@dataclass(slots=True, frozen=True)
class SamplingParams:
    """Fully resolved sampling values handed to a backend."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


ResponseFormat = Literal["json"] | dict[str, Any]
"""Constrained output: "json" for any JSON object, or a JSON schema (a dict) the output must validate against."""


@dataclass(slots=True)
class GenerationRequest:
    """One generation: either chat `messages` (formatted with the model's chat template) or a raw `prompt`."""

    model_id: str
    sampling: SamplingParams
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    request_id: str = ""
    response_format: ResponseFormat | None = None
    """Constrain the output to JSON; a backend that cannot must refuse the request (CapabilityError)."""
    suffix: str | None = None
    """Text that follows the insertion point (fill-in-the-middle); only with `prompt`, on models with FIM tokens."""
    context_tokens: list[int] | None = None
    """Token ids of an earlier prompt and reply (Ollama's `context`), placed before this request's prompt."""
    return_tokens: bool = False
    """Report the prompt and output token ids in the final chunk's `context_tokens`, to continue from later."""


@dataclass(slots=True)
class GenerationStats:
    """Measured figures of one finished generation (seconds, token counts)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    prompt_eval_seconds: float = 0.0
    generation_seconds: float = 0.0
    queue_seconds: float = 0.0
    load_seconds: float = 0.0


@dataclass(slots=True)
class GenerationChunk:
    """A piece of output. The last chunk of a stream has `finish_reason` and `stats` set."""

    text: str
    token_count: int = 0
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    context_tokens: list[int] | None = None
    """On the final chunk when the request set `return_tokens`: prompt and output token ids."""


EmbeddingInputs = Sequence[str | list[int]]
"""What to embed: texts, or token-id lists of the model's own vocabulary."""


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]] = field(default_factory=list)
    prompt_tokens: int = 0
