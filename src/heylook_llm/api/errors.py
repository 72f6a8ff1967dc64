"""Domain errors to HTTP, once: the status here, the body in the shape of the dialect that served the request."""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from heylook_llm.api.dialects import DialectRegistry
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.errors import (
    CapabilityError,
    ContextLengthExceeded,
    GenerationFailed,
    HeylookError,
    InsufficientMemory,
    InvalidRequest,
    LimitExceeded,
    ModelLoadError,
    ModelNotFound,
    ServerBusy,
    ServerShuttingDown,
    UnsupportedParameter,
)

log = logging.getLogger(__name__)


def status_and_code(exc: HeylookError) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, OpenAI error code) for a domain error."""
    if isinstance(exc, ModelNotFound):
        return 404, "invalid_request_error", "model_not_found"
    if isinstance(exc, ContextLengthExceeded):
        return 400, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, CapabilityError):
        return 400, "invalid_request_error", "unsupported_capability"
    if isinstance(exc, UnsupportedParameter):
        return 400, "invalid_request_error", "unsupported_parameter"
    if isinstance(exc, LimitExceeded):
        return 413, "invalid_request_error", "limit_exceeded"
    if isinstance(exc, InvalidRequest):
        return 400, "invalid_request_error", "invalid_value"
    if isinstance(exc, ModelLoadError):
        return (503 if exc.missing_dependency else 500), "server_error", "model_load_failed"
    if isinstance(exc, ServerBusy):
        return 503, "server_error", "server_busy"
    if isinstance(exc, InsufficientMemory):
        return 507, "server_error", "insufficient_memory"
    if isinstance(exc, ServerShuttingDown):
        return 503, "server_error", "server_shutting_down"
    if isinstance(exc, GenerationFailed):
        return 500, "server_error", "generation_failed"
    return 500, "server_error", "internal_error"


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    registry: DialectRegistry = request.app.state.dialects
    dialect = registry.for_request(request)
    body = dialect.error_body(message, dialect.error_type(status, type_), param, code)
    return OrjsonResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    first_param: str | None = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        first_param = first_param or param
        problems.append(f"{param}: {err.get('msg')}" if param else str(err.get("msg")))
    return "invalid request: " + "; ".join(problems), first_param


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HeylookError)
        status, type_, code = status_and_code(exc)
        headers = {"Retry-After": str(exc.retry_after_seconds)} if isinstance(exc, ServerBusy) else None
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc.message)
        return error_response(request, status, exc.message, type_=type_, param=exc.param, code=code, headers=headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return error_response(request, 400, message, type_="invalid_request_error", param=param, code="invalid_value")

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail) if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
        return error_response(
            request,
            exc.status_code,
            message,
            type_="invalid_request_error",
            param=None,
            code=None,
            headers=getattr(exc, "headers", None),
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # The exception's class and text may hold file paths and internals: they go to the log, and the client
        # gets an id to find them there.
        error_id = secrets.token_hex(6)
        log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return error_response(
            request,
            500,
            f"internal server error (error id {error_id}; the server log has the details)",
            type_="server_error",
            param=None,
            code="internal_error",
            headers={"X-Error-Id": error_id},
        )

    app.add_exception_handler(HeylookError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
