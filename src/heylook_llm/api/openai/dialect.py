"""The OpenAI dialect's error shape, mid-stream error event and routes' marker."""

from __future__ import annotations

from typing import Any

from heylook_llm.api.dialects import Dialect, dialect_route
from heylook_llm.api.errors import status_and_code
from heylook_llm.api.framing import SSE_DONE, sse_event
from heylook_llm.errors import HeylookError


def openai_error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_error_payload(exc: HeylookError) -> dict[str, Any]:
    _, type_, code = status_and_code(exc)
    return openai_error_body(exc.message, type_, exc.param, code)


def openai_stream_error(exc: HeylookError) -> bytes:
    """After the 200 and the first events, a failure is an SSE event carrying the error, as OpenAI sends, then the
    stream's usual terminator `data: [DONE]`, so that a client reading to the end sees the stream closed cleanly."""
    return sse_event(openai_error_payload(exc)) + SSE_DONE


OPENAI = Dialect("openai", ("/v1/",), openai_error_body, openai_stream_error)
OpenAIRoute = dialect_route(OPENAI.name)
