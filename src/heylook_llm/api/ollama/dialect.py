"""The Ollama dialect's error shape, mid-stream error line and routes' marker."""

from __future__ import annotations

from typing import Any

from heylook_llm.api.dialects import Dialect, dialect_route
from heylook_llm.api.framing import ndjson_line
from heylook_llm.errors import HeylookError


def ollama_error_body(message: str, _type: str, _param: str | None, _code: str | None) -> dict[str, Any]:
    return {"error": message}


def ollama_stream_error(exc: HeylookError) -> bytes:
    """After the 200 and the first lines, Ollama reports a failure as a last line `{"error": ...}`."""
    return ndjson_line({"error": exc.message})


OLLAMA = Dialect("ollama", ("/api/",), ollama_error_body, ollama_stream_error)
OllamaRoute = dialect_route(OLLAMA.name)
