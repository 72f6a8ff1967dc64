"""What every backend provides: load a model, run sequences (open / step / close), embed, unload.

One interface: the worker opens a sequence per request and steps all of its sequences together. A backend that
can only produce one token stream at a time derives from `GeneratorBackend`, which adapts a generator to it.
"""

from __future__ import annotations

import abc
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import CapabilityError, GenerationFailed
from heylook_llm.types import (
    EmbeddingInputs,
    EmbeddingResult,
    Feature,
    GenerationChunk,
    GenerationRequest,
    RerankResult,
)


@dataclass(slots=True)
class ModelFacts:
    """What a loaded model reports about itself (for /v1/models, Ollama's show/ps, metrics)."""

    context_length: int = 0
    size_bytes: int = 0
    accelerator_bytes: int = 0
    """Bytes of the weights held in GPU (or Apple unified) memory; 0 when the model runs on the CPU."""
    load_fraction: float | None = None
    """While loading: the share of the weights read so far (llama.cpp reports it); None where not reported."""
    metadata: dict[str, str] = field(default_factory=dict)
    chat_template: str | None = None
    special_tokens: dict[str, int] = field(default_factory=dict)
    """Ids of the vocabulary's control tokens by text (such as "<tool_call>" in Qwen's), which grammars must write
    as those tokens rather than spell out."""


class Backend(abc.ABC):
    """One loaded model. All methods but `check_request` run on the model's worker thread, never on the event
    loop."""

    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        self.entry = entry
        self.settings = settings
        self.facts = ModelFacts()
        self.features: frozenset[Feature] = frozenset()
        """What this model implements, set by `load()`; a request using anything else is refused."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights and set `features`; raise ModelLoadError with a reason a user can act on."""

    max_parallel: int = 1
    """Sequences the worker may step at once; backends that batch raise it after load()."""

    @abc.abstractmethod
    def open_sequence(self, request: GenerationRequest) -> Any:
        """Start one generation and return its handle for `step`; raise domain errors for a bad request."""

    @abc.abstractmethod
    def step(self, sequences: list[Any]) -> list[GenerationChunk | BaseException | None]:
        """Advance every sequence by one token: a chunk each (None: nothing yet, an exception: it failed).
        The last chunk of a sequence has finish_reason and stats."""

    @abc.abstractmethod
    def close_sequence(self, sequence: Any) -> None:
        """Release what a finished, failed or cancelled sequence holds."""

    def generate(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        """One sequence stepped by itself until it ends (tests and tools; the worker steps sequences together)."""
        return self.run_alone(self.open_sequence(request))

    def run_alone(self, sequence: Any) -> Generator[GenerationChunk, None, None]:
        try:
            while True:
                chunk = self.step([sequence])[0]
                if isinstance(chunk, BaseException):
                    raise chunk
                if chunk is not None:
                    yield chunk
                    if chunk.finish_reason is not None:
                        return
        finally:
            self.close_sequence(sequence)

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse what this model cannot do with a request that only uses declared features (for example a suffix
        with chat messages), before the request is queued. Runs on the event loop: read only what `load()` set.
        """
        return None

    def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt tokens `open_sequence` would evaluate for `request` (template rendered, images counted),
        without generating."""
        raise CapabilityError(f"model '{self.entry.id}' cannot count prompt tokens", param="model")

    def embed(self, inputs: EmbeddingInputs, *, truncate: bool = False) -> EmbeddingResult:
        """One vector per input (a text, or token ids of the model's own vocabulary); `truncate` cuts inputs
        longer than the context instead of refusing them."""
        raise CapabilityError(f"model '{self.entry.id}' does not produce embeddings", param="model")

    def rerank(self, query: str, documents: list[str]) -> RerankResult:
        """One relevance score per document for `query` (a reranker's classification head)."""
        raise CapabilityError(f"model '{self.entry.id}' is not a reranker", param="model")

    @abc.abstractmethod
    def unload(self) -> None:
        """Release the weights and any native memory."""


class GeneratorBackend(Backend):
    """A backend written as one generator per request, stepped one token at a time (no batching)."""

    @abc.abstractmethod
    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        """Yield one chunk per generated token (text may be empty), the last with finish_reason and stats.

        Raise domain errors (ContextLengthExceeded, InvalidRequest) before the first yield. The caller may
        close the iterator between tokens to cancel.
        """

    def open_sequence(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        return self.generate_tokens(request)

    def step(self, sequences: list[Any]) -> list[GenerationChunk | BaseException | None]:
        results: list[GenerationChunk | BaseException | None] = []
        for sequence in sequences:
            try:
                results.append(next(sequence))
            except StopIteration:
                results.append(GenerationFailed("the backend ended the stream without a finish reason"))
            except Exception as exc:
                results.append(exc)
        return results

    def close_sequence(self, sequence: Any) -> None:
        sequence.close()
