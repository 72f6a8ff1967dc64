"""A fake backend for router unit tests: counts loads and unloads, generates fixed text, can be told to fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field

from heylook_llm.backends.base import Backend, GeneratorBackend
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import ModelLoadError
from heylook_llm.types import (
    Feature,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    TokenLogprob,
    TopLogprob,
)


@dataclass
class FakeWorld:
    """What the fake backends did, shared by all of them in one test."""

    load_seconds: float = 0.05
    token_seconds: float = 0.0
    fail_loading: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)
    unloads: list[str] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    features: frozenset[Feature] = frozenset({Feature.CHAT, Feature.COMPLETION})
    chat_template: str | None = None
    pieces: list[str] | None = None
    """Each generated token's text instead of "t0 ", "t1 ", ... (then the output ends with stop, not length)."""
    opens_reasoning: bool = False
    """Say on the first chunk that the prompt opened the reasoning (as a template ending in <think> does)."""
    requests: list[GenerationRequest] = field(default_factory=list)

    def factory(self, entry: ModelEntry, settings: ServerSettings) -> Backend:
        return FakeBackend(entry, settings, self)


class FakeBackend(GeneratorBackend):
    def __init__(self, entry: ModelEntry, settings: ServerSettings, world: FakeWorld) -> None:
        super().__init__(entry, settings)
        self.world = world

    def load(self) -> None:
        time.sleep(self.world.load_seconds)
        if self.entry.id in self.world.fail_loading:
            raise ModelLoadError(self.entry.id, "told to fail")
        with self.world.lock:
            self.world.loads.append(self.entry.id)
            self.world.loaded.add(self.entry.id)
        self.features = self.world.features
        self.facts.chat_template = self.world.chat_template

    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        self.world.requests.append(request)
        limit = request.sampling.max_tokens
        texts = self.world.pieces if self.world.pieces is not None else [f"t{i} " for i in range(limit)]
        for i, text in enumerate(texts[:limit]):
            time.sleep(self.world.token_seconds)
            chunk = GenerationChunk(text, token_count=1, token_ids=[i], reasoning_open=i == 0 and self._opened(request))
            if request.logprobs:
                chunk.logprobs = [_fake_logprob(i, text, request.top_logprobs)]
            yield chunk
        produced = min(limit, len(texts))
        stats = GenerationStats(prompt_tokens=1, completion_tokens=produced)
        reason = FinishReason.LENGTH if produced == limit else FinishReason.STOP
        yield GenerationChunk("", finish_reason=reason, stats=stats)

    def _opened(self, request: GenerationRequest) -> bool:
        return self.world.opens_reasoning and request.reasoning is not None and bool(request.reasoning.start_marker)

    def unload(self) -> None:
        with self.world.lock:
            if self.entry.id in self.world.loaded:
                self.world.unloads.append(self.entry.id)
                self.world.loaded.discard(self.entry.id)


def _fake_logprob(index: int, text: str, top: int) -> TokenLogprob:
    """Token `index` with logprob -0.5 - index/10, the most likely of its position; alternatives below it."""
    value = -0.5 - index / 10
    alternatives = [TopLogprob(index, text, value, text.encode())]
    alternatives += [TopLogprob(1000 + k, f"alt{k}", value - 1 - k, f"alt{k}".encode()) for k in range(top - 1)]
    return TokenLogprob(index, text, value, tuple(alternatives[:top]), text.encode())
