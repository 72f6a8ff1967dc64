"""What every backend provides: load a model, generate neutral chunks, embed, unload."""

from __future__ import annotations

import abc
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import CapabilityError, GenerationFailed
from heylook_llm.types import EmbeddingInputs, EmbeddingResult, GenerationChunk, GenerationRequest


@dataclass(slots=True)
class ModelFacts:
    """What a loaded model reports about itself (for /v1/models, Ollama's show/ps, metrics)."""

    context_length: int = 0
    size_bytes: int = 0
    accelerator_bytes: int = 0
    """Bytes of the weights held in GPU (or Apple unified) memory; 0 when the model runs on the CPU."""
    metadata: dict[str, str] = field(default_factory=dict)
    chat_template: str | None = None


class Backend(abc.ABC):
    """One loaded model. All methods run on the model's worker thread, never on the event loop."""

    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        self.entry = entry
        self.settings = settings
        self.facts = ModelFacts()

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights; raise ModelLoadError with a reason a user can act on."""

    max_parallel: int = 1
    """Sequences the worker may step at once; backends that batch raise it after load()."""

    def open_sequence(self, request: GenerationRequest) -> Any:
        """Start one generation and return its handle for `step`; raise domain errors for a bad request.

        By default the handle is the `generate()` generator, stepped one token at a time.
        """
        return self.generate(request)

    def step(self, sequences: list[Any]) -> list[GenerationChunk | BaseException | None]:
        """Advance every sequence by one token: a chunk each (None: nothing yet, an exception: it failed).

        Batching backends override this to run one forward pass for all sequences.
        """
        results: list[GenerationChunk | BaseException | None] = []
        for sequence in sequences:
            try:
                results.append(next(sequence))
            except StopIteration:
                results.append(GenerationFailed("the backend ended the stream without a finish reason"))
            except Exception as exc:
                results.append(exc)
        return results

    def run_alone(self, sequence: Any) -> Generator[GenerationChunk, None, None]:
        """Step one opened sequence by itself until it ends, then close it (for `generate()` of batching
        backends; the worker steps all sequences together instead)."""
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

    def close_sequence(self, sequence: Any) -> None:
        """Release what a finished, failed or cancelled sequence holds."""
        sequence.close()

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        """Yield one chunk per generated token (text may be empty), the last with finish_reason and stats.

        Raise domain errors (ContextLengthExceeded, InvalidRequest) before the first yield. The caller may
        close the iterator between tokens to cancel.
        """

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse request features this backend does not implement, before the request is queued.

        Runs on the event loop, so it must only read what `load()` set. Backends override it as they learn
        features; the base refuses every optional one so that none is silently ignored.
        """
        if request.response_format is not None:
            raise CapabilityError(
                f"model '{self.entry.id}' ({self.entry.provider}) cannot constrain output to JSON (response_format)",
                param="response_format",
            )
        if request.suffix is not None:
            raise CapabilityError(
                f"model '{self.entry.id}' ({self.entry.provider}) does not support fill-in-the-middle (suffix)",
                param="suffix",
            )
        if request.context_tokens:
            raise CapabilityError(
                f"model '{self.entry.id}' ({self.entry.provider}) cannot continue from token ids (context)",
                param="context",
            )

    def embed(self, inputs: EmbeddingInputs, *, truncate: bool = False) -> EmbeddingResult:
        """One vector per input (a text, or token ids of the model's own vocabulary); `truncate` cuts inputs
        longer than the context instead of refusing them."""
        raise CapabilityError(f"model '{self.entry.id}' does not produce embeddings", param="model")

    @abc.abstractmethod
    def unload(self) -> None:
        """Release the weights and any native memory."""
