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


def user_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


@dataclass(slots=True)
class ResponseStoreSettings:
    """Stored responses of the OpenAI Responses API (docs/responses.md): `store: true` responses are kept for
    GET /v1/responses/{id} and `previous_response_id`, oldest evicted first."""

    enabled: bool = True
    """Off (--no-response-store): nothing is written; previous_response_id is refused."""
    path: Path | None = None
    """The SQLite file (--response-store PATH); None: responses.sqlite3 in the per-user data folder."""
    max_responses: int = 1000
    """Stored responses kept (--response-store-max); the oldest go first."""
    max_age_seconds: float = 30 * 24 * 3600.0
    """Stored responses older than this are gone (--response-store-max-age, default 30 days)."""

    def file(self) -> Path:
        return self.path if self.path is not None else user_data_dir() / "responses.sqlite3"


@dataclass(slots=True)
class ImageSettings:
    """Limits on images in requests (docs/vision.md)."""

    max_images_per_request: int = 16
    max_image_bytes: int = 20 * 1024 * 1024
    """Encoded size of one image, however it arrives (data URL, upload, download)."""
    max_image_pixels: int = 50_000_000
    """Width x height of one image before resizing; larger images (decompression bombs) are refused unread."""
    fetch_timeout_seconds: float = 10.0
    """Whole download of one http(s) image URL, redirects included."""
    max_redirects: int = 3
    allow_private_urls: bool = False
    """Allow image URLs that resolve to loopback, private or link-local addresses (off: a request must not make
    the server reach its own network)."""
    decode_threads: int = 4
    """Images decoded and resized at once by the request's image pipeline, and decoded at once by a model's backend
    for one request (each 50-megapixel image needs about 150 MB while it is decoded)."""


@dataclass(slots=True)
class AccessSettings:
    """Who may use the server (docs/security.md)."""

    api_keys: tuple[str, ...] = ()
    """With keys, every request but /health and the web page's files needs one (`Authorization: Bearer KEY` or
    `x-api-key: KEY`); 401 otherwise. Empty: no key is asked for."""
    allowed_origins: tuple[str, ...] = ()
    """Web origins (`https://app.example.com`, `*` patterns allowed) whose pages may call the server, besides the
    loopback origins (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`) and the server's own."""
    allowed_hosts: tuple[str, ...] | None = None
    """Host header values (`name`, `name:port`, `*` patterns) accepted besides the loopback names. None: when bound
    to a loopback address, only the loopback names (this stops DNS rebinding); otherwise any host."""


MIB = 1024 * 1024


@dataclass(slots=True)
class RequestLimits:
    """Bounds on what one request may ask for (docs/security.md); each has a command-line flag."""

    max_body_bytes: int = 64 * MIB
    """Request body size (--max-body-mb), refused while it is read, before anything parses it: enough for a few
    large base64 images."""
    max_messages: int = 4096
    """Messages in one chat request (--max-messages)."""
    max_prompts: int = 2048
    """Prompts in one completions request, texts in one embeddings request (--max-prompts; OpenAI's own limit
    for embeddings inputs)."""
    max_stop_strings: int = 64
    """Stop strings in one request (--max-stop-strings)."""
    prompt_bytes_per_token: int = 16
    """A prompt longer than this many bytes per token of the model's context window is refused before it is
    tokenized, and chat templates stop rendering there (--prompt-bytes-per-token): real tokens are shorter, so
    such a prompt could not fit."""


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
    images: ImageSettings = field(default_factory=ImageSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    limits: RequestLimits = field(default_factory=RequestLimits)
    responses: ResponseStoreSettings = field(default_factory=ResponseStoreSettings)
    stream_interval_seconds: float = 0.005
    """While one stream's tokens come faster than this, they are sent together at most this often (the first
    and the last token at once); 0 sends every token as its own chunk."""
    shutdown_timeout_seconds: float = 5.0
    """On SIGTERM, how long requests in flight may go on (--shutdown-timeout); streams still running then end with
    their dialect's error event."""
    keep_alive_seconds: float = 300.0
    """How long a model stays loaded after its last request when the request does not say (Ollama's keep_alive);
    `math.inf` keeps models loaded until evicted, 0 unloads them as soon as they are idle."""
