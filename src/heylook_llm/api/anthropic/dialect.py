"""The Anthropic dialect's error shape, mid-stream error event and routes' marker.

Anthropic's error type follows the HTTP status (400 invalid_request_error, 404 not_found_error, ...); errors the
security layer writes before any route runs carry only a code, which is mapped here too.
"""

from __future__ import annotations

from typing import Any

import orjson

from heylook_llm.api.dialects import Dialect, dialect_route
from heylook_llm.api.errors import status_and_code
from heylook_llm.errors import HeylookError

ERROR_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
ANTHROPIC_ERROR_TYPES = frozenset(ERROR_TYPES_BY_STATUS.values())

_TYPES_BY_CODE = {
    # The security layer's refusals (api/security/layer.py), which know only their code.
    "invalid_api_key": "authentication_error",
    "host_not_allowed": "permission_error",
    "origin_not_allowed": "permission_error",
    "request_too_large": "request_too_large",
    "limit_exceeded": "request_too_large",
    "model_not_found": "not_found_error",
    "server_busy": "overloaded_error",
    "server_shutting_down": "overloaded_error",
}


def named_event(event: str, payload: dict[str, Any]) -> bytes:
    """An SSE event with Anthropic's event name line; the payload's `type` repeats the name, as Anthropic sends."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def anthropic_error_type(type_: str, code: str | None) -> str:
    """Anthropic's error type for an error given as (type, code): a type that is Anthropic's already is kept."""
    if type_ in ANTHROPIC_ERROR_TYPES and type_ != "invalid_request_error":
        return type_
    by_code = _TYPES_BY_CODE.get(code or "")
    if by_code is not None:
        return by_code
    return "api_error" if type_ == "server_error" else "invalid_request_error"


def anthropic_error_body(message: str, type_: str, _param: str | None, code: str | None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(type_, code), "message": message}}


def anthropic_error_payload(exc: HeylookError) -> dict[str, Any]:
    status, type_, code = status_and_code(exc)
    return anthropic_error_body(exc.message, ERROR_TYPES_BY_STATUS.get(status, type_), exc.param, code)


def anthropic_stream_error(exc: HeylookError) -> bytes:
    """After the 200 and the first events, Anthropic reports a failure as a named `error` event."""
    return named_event("error", anthropic_error_payload(exc))


ANTHROPIC = Dialect("anthropic", ("/v1/messages",), anthropic_error_body, anthropic_stream_error, ERROR_TYPES_BY_STATUS)
AnthropicRoute = dialect_route(ANTHROPIC.name)
