"""What every backend provides: load a model, generate neutral chunks, embed, unload."""

from __future__ import annotations

import abc
from collections.abc import Generator
from dataclasses import dataclass, field

from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import CapabilityError
from heylook_llm.types import EmbeddingResult, GenerationChunk, GenerationRequest


@dataclass(slots=True)
class ModelFacts:
    """What a loaded model reports about itself (for /v1/models, Ollama's show/ps, metrics)."""

    context_length: int = 0
    size_bytes: int = 0
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

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        """Yield one chunk per generated token (text may be empty), the last with finish_reason and stats.

        Raise domain errors (ContextLengthExceeded, InvalidRequest) before the first yield. The caller may
        close the iterator between tokens to cancel.
        """

    def embed(self, inputs: list[str]) -> EmbeddingResult:
        raise CapabilityError(f"model '{self.entry.id}' does not produce embeddings", param="model")

    @abc.abstractmethod
    def unload(self) -> None:
        """Release the weights and any native memory."""
