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
from heylook_llm.types import Feature, FinishReason, GenerationChunk, GenerationRequest, GenerationStats


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
        self.features = frozenset({Feature.CHAT, Feature.COMPLETION})

    def generate_tokens(self, request: GenerationRequest) -> Generator[GenerationChunk, None, None]:
        for i in range(request.sampling.max_tokens):
            time.sleep(self.world.token_seconds)
            yield GenerationChunk(f"t{i} ", token_count=1)
        stats = GenerationStats(prompt_tokens=1, completion_tokens=request.sampling.max_tokens)
        yield GenerationChunk("", finish_reason=FinishReason.LENGTH, stats=stats)

    def unload(self) -> None:
        with self.world.lock:
            if self.entry.id in self.world.loaded:
                self.world.unloads.append(self.entry.id)
                self.world.loaded.discard(self.entry.id)
