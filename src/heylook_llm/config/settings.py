"""Server settings: what the CLI resolved, passed to every layer that needs it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from heylook_llm.types import SamplingParams

APP_NAME = "heylookllm"
OPENAI_DEFAULT_PORT = 8080
OLLAMA_DEFAULT_PORT = 11434


class ApiMode(enum.StrEnum):
    OPENAI = "openai"
    OLLAMA = "ollama"
    BOTH = "both"

    @property
    def serves_openai(self) -> bool:
        return self in (ApiMode.OPENAI, ApiMode.BOTH)

    @property
    def serves_ollama(self) -> bool:
        return self in (ApiMode.OLLAMA, ApiMode.BOTH)


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME))


def user_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME))


@dataclass(slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = OPENAI_DEFAULT_PORT
    api: ApiMode = ApiMode.BOTH
    config_path: Path | None = None
    startup_model_id: str | None = None
    log_level: str = "INFO"
    default_sampling: SamplingParams = field(default_factory=SamplingParams)
    max_queued_requests_per_model: int = 64
    """Requests waiting for one model beyond this get 503 with Retry-After."""
    keep_alive_seconds: float = 300.0
    """How long a model stays loaded after its last request when the request does not say (Ollama's keep_alive);
    `math.inf` keeps models loaded until evicted, 0 unloads them as soon as they are idle."""
