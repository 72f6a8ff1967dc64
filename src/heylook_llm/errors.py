"""Domain errors, raised anywhere below the API layer and mapped to HTTP once per dialect."""

from __future__ import annotations


class HeylookError(Exception):
    """Base of every error the API layer knows how to answer."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(HeylookError):
    """The request is malformed or asks for something impossible (HTTP 400)."""


class UnsupportedParameter(InvalidRequest):
    """A field of the client's API that this server does not implement, with a value that asks for it (HTTP 400).
    Refused rather than ignored, so that a client never gets an answer to a different question."""


class LimitExceeded(InvalidRequest):
    """The request is larger than a configured limit allows, e.g. too many or too large images (HTTP 413)."""


class ModelNotFound(HeylookError):
    """No enabled model has this id (HTTP 404)."""

    def __init__(self, model_id: str, available: list[str] | None = None) -> None:
        hint = f"; available models: {', '.join(available)}" if available else ""
        super().__init__(f"model '{model_id}' not found{hint}", param="model")
        self.model_id = model_id


class ModelLoadError(HeylookError):
    """The model exists in the registry but could not be loaded (HTTP 500, or 503 when a dependency is missing)."""

    def __init__(self, model_id: str, reason: str, *, missing_dependency: bool = False) -> None:
        super().__init__(f"model '{model_id}' failed to load: {reason}")
        self.model_id = model_id
        self.reason = reason
        self.missing_dependency = missing_dependency


class CapabilityError(HeylookError):
    """The model cannot do what was asked, e.g. embeddings from a chat-only model (HTTP 400)."""


class ContextLengthExceeded(HeylookError):
    """The prompt does not fit the model's context window (HTTP 400)."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens long but the model's context window is {context_length} tokens",
            param="messages",
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class PromptTooLong(ContextLengthExceeded):
    """The prompt's text is longer than the context window could hold, found before tokenizing it (HTTP 400):
    tokenizing megabytes only to count them costs seconds and gigabytes, and blocks the model for everyone."""

    def __init__(self, context_length: int, max_bytes: int, prompt_bytes: int | None = None) -> None:
        size = f"{prompt_bytes:,} bytes" if prompt_bytes is not None else f"more than {max_bytes:,} bytes"
        HeylookError.__init__(
            self,
            f"the prompt is {size} long; the model's context window of {context_length} tokens holds at most "
            f"{max_bytes:,} bytes of text (limit set by --prompt-bytes-per-token)",
            param="messages",
        )
        self.prompt_tokens = -1
        """Not counted: the text was refused before tokenizing."""
        self.context_length = context_length
        self.max_bytes = max_bytes


class ServerBusy(HeylookError):
    """Too many requests are queued for a model (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class InsufficientMemory(HeylookError):
    """The model cannot fit the memory budget even with every evictable model unloaded (HTTP 507); raised before
    anything is loaded. The message names the estimate and the budget."""


class GenerationFailed(HeylookError):
    """The backend failed while generating (HTTP 500)."""


class ServerShuttingDown(HeylookError):
    """The server is stopping: new work is refused and work still running at the end of the shutdown timeout is
    ended with this error (HTTP 503; a stream ends with the dialect's error event)."""
