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
    TOOL_CALLS = "tool_calls"
    """The model called one or more tools (the output parser found complete tool calls)."""


class Feature(enum.StrEnum):
    """What a request may ask of a model. Backends declare the ones they implement; the engine refuses a request
    that uses any other (engine/features.py), so a new backend is safe by default."""

    CHAT = "chat"
    """Messages formatted with the model's chat template."""
    COMPLETION = "completion"
    """A raw prompt."""
    EMBEDDING = "embedding"
    IMAGES = "images"
    RESPONSE_FORMAT = "response_format"
    """Output constrained to JSON or a JSON schema."""
    FILL_IN_MIDDLE = "suffix"
    CONTEXT_TOKENS = "context_tokens"
    """Continuing from token ids of an earlier prompt and reply (Ollama's `context`)."""
    TOOLS = "tools"
    LOGPROBS = "logprobs"
    REASONING = "reasoning"
    RERANK = "rerank"
    """Scoring documents against a query (a reranker's classification head)."""


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


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A complete call of a tool by the model (in an assistant message of the history, or parsed from output)."""

    id: str
    name: str
    arguments: str
    """The arguments as JSON text, as the model wrote them."""


@dataclass(slots=True)
class ChatMessage:
    """One turn. Its content parts are its text and its images: chat templates place the images before the text."""

    role: str
    content: str
    images: list[ImageData] = field(default_factory=list)
    """Images of this message, in order."""
    name: str | None = None
    """A participant's name (OpenAI's `name`); templates that know the field may use it."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Assistant turns: the tools the model called."""
    tool_call_id: str | None = None
    """Role "tool": the call this result answers."""
    tool_name: str | None = None
    """Role "tool": the tool that produced this result (Ollama's `tool_name`)."""
    reasoning: str | None = None
    """Assistant turns: reasoning sent back by the client; the chat template decides whether the model sees it."""


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


@dataclass(slots=True, frozen=True)
class GrammarSpec:
    """Output constrained by a grammar (Lark, or llama.cpp's GBNF) or a regular expression."""

    syntax: Literal["grammar", "regex"]
    text: str
    param: str = "grammar"
    """The request field it came from, for errors."""


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    """JSON schema of the arguments."""
    strict: bool = False


@dataclass(slots=True, frozen=True)
class ToolChoice:
    """Whether the model may, must or must not call tools; `name` forces one function."""

    mode: Literal["none", "auto", "required", "function"] = "auto"
    name: str | None = None


@dataclass(slots=True, frozen=True)
class ReasoningControl:
    """What the client asked of a reasoning model (None: the model's default)."""

    enabled: bool | None = None
    effort: str | None = None
    """A level such as "low", "medium" or "high", for templates that take one."""
    max_tokens: int | None = None
    """A reasoning budget: when spent, the reasoning is closed and the model answers."""
    start_marker: str = ""
    """Set by the engine for models with a reasoning format: the text that opens the reasoning section
    (`<think>`); the backend follows the output with it to count reasoning tokens and to know when the answer
    starts. Empty: the model has no reasoning format."""
    end_marker: str = ""
    """The text that ends the reasoning section (`</think>`)."""
    close_text: str = ""
    """What the backend writes when the budget is spent: the end marker, and for formats whose answer has a
    header of its own (Harmony's final channel) that header too."""


@dataclass(slots=True)
class GenerationRequest:
    """One generation: either chat `messages` (formatted with the model's chat template) or a raw `prompt`."""

    model_id: str
    sampling: SamplingParams
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    request_id: str = ""
    origin: str = ""
    """The API dialect that made the request ("openai", "ollama"), for the request history; "" when not said."""
    response_format: ResponseFormat | None = None
    """Constrain the output to JSON; a backend that cannot must refuse the request (CapabilityError)."""
    grammar: GrammarSpec | None = None
    """Constrain the output to a grammar or regex instead (an extension field of both dialects)."""
    suffix: str | None = None
    """Text that follows the insertion point (fill-in-the-middle); only with `prompt`, on models with FIM tokens."""
    context_tokens: list[int] | None = None
    """Token ids of an earlier prompt and reply (Ollama's `context`), placed before this request's prompt."""
    return_tokens: bool = False
    """Report the prompt and output token ids in the final chunk's `context_tokens`, to continue from later."""
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    logprobs: bool = False
    """Report the log probability of each output token."""
    top_logprobs: int = 0
    """With `logprobs`: also the N most likely alternatives at each position."""
    reasoning: ReasoningControl | None = None
    template_variables: dict[str, Any] = field(default_factory=dict)
    """Extra variables for the chat template, set by the engine (Qwen3's `enable_thinking`, gpt-oss's
    `reasoning_effort`)."""


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
    draft_tokens: int = 0
    """Tokens drafted for speculative decoding (llama.cpp models with draft_model_path or prompt_lookup)."""
    accepted_draft_tokens: int = 0
    """Drafted tokens the model agreed with: generated tokens that came from drafts."""
    reasoning_tokens: int = 0
    """Generated tokens that went to the reasoning section, its markers included (set by the engine's reasoning
    split; 0 for output with no reasoning format)."""


MAX_TOP_LOGPROBS = 20
"""The most alternatives per position a request may ask for (OpenAI's and Ollama's limit)."""


@dataclass(slots=True, frozen=True)
class TopLogprob:
    token_id: int
    text: str
    logprob: float
    piece: bytes = b""
    """The token's bytes (a token may hold part of a UTF-8 character; `text` then shows its bytes escaped)."""


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    """The log probability of one output token, and the most likely alternatives at its position (docs/logprobs.md
    says which distribution the values describe)."""

    token_id: int
    text: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()
    piece: bytes = b""


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call as it streams: the first piece of call `index` has its id and name; `arguments`
    pieces concatenate to the JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class GenerationChunk:
    """A piece of output. The last chunk of a stream has `finish_reason` and `stats` set.

    `text` is answer text; `reasoning` and `tool_calls` are what the output parser separated from it.
    """

    text: str
    token_count: int = 0
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    context_tokens: list[int] | None = None
    """On the final chunk when the request set `return_tokens`: prompt and output token ids."""
    token_ids: list[int] = field(default_factory=list)
    """The ids of the tokens this chunk covers, when the backend reports them."""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """With a request's `logprobs`: one entry per token of this chunk."""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    reasoning_open: bool = False
    """On a generation's first chunk: the prompt ends inside the reasoning section (the chat template opened it),
    so the output starts as reasoning."""
    stop_sequence: str | None = None
    """On the final chunk: the request's stop string that ended the generation (None: it ended otherwise)."""
    pieces: list[tuple[int, int]] = field(default_factory=list)
    """For a chunk merged from several (`absorb`): each one's (characters of `text`, token count), in order, so
    that the reasoning split can count tokens as if they had come one chunk at a time. Empty: one piece."""

    def absorb(self, later: GenerationChunk) -> None:
        """Append a later chunk of the same stream to this one, keeping everything both carry."""
        self.reasoning_open = self.reasoning_open or later.reasoning_open
        if not self.pieces:
            self.pieces.append((len(self.text), self.token_count))
        self.pieces.extend(later.pieces or [(len(later.text), later.token_count)])
        self.text += later.text
        self.reasoning += later.reasoning
        self.token_count += later.token_count
        self.token_ids.extend(later.token_ids)
        self.logprobs.extend(later.logprobs)
        for delta in later.tool_calls:
            last = self.tool_calls[-1] if self.tool_calls else None
            if last is not None and last.index == delta.index and delta.id is None and delta.name is None:
                last.arguments += delta.arguments
            else:
                self.tool_calls.append(ToolCallDelta(delta.index, delta.id, delta.name, delta.arguments))
        self.finish_reason = later.finish_reason
        self.stop_sequence = later.stop_sequence
        self.stats = later.stats
        self.context_tokens = later.context_tokens


EmbeddingInputs = Sequence[str | list[int]]
"""What to embed: texts, or token-id lists of the model's own vocabulary."""


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]] = field(default_factory=list)
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RerankResult:
    scores: list[float]
    """One relevance score per document, in the documents' order."""
    prompt_tokens: int
