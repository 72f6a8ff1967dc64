"""The OpenAPI document says what the server really answers.

Routes declare their own successes and domain errors (`responses=` on the decorators). What applies to every
route is added here once: validation errors are 400 in the dialect's error shape (FastAPI documents 422, which
this server never sends), and the security layer (api/security) may answer any route 401 (API key), 403 (Host or
Origin) or, for a route with a body, 413 (too large) and 415 (not JSON); any route may fail with 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_JSON_ERROR = {"application/json": {"schema": {"type": "object"}}}
_EVERY_ROUTE = {
    "401": "An API key is required and this one is missing or wrong (only when the server has keys)",
    "403": "The Host or Origin header is not accepted",
    "500": "Internal error; the body has an error id to look up in the server log",
}
_WITH_BODY = {
    "400": "Invalid request: the body does not match the schema, or asks for something the model cannot do",
    "413": "The body, or a count in it (prompts, messages, images), is larger than a limit allows",
    "415": "The body is not JSON",
}


def _document_operation(operation: dict[str, Any], has_body: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    validation = responses.pop("422", None)
    if validation is not None and "400" not in responses:
        responses["400"] = {"description": _WITH_BODY["400"], "content": _JSON_ERROR}
    added = {**_EVERY_ROUTE, **(_WITH_BODY if has_body or validation is not None else {})}
    for status, description in added.items():
        responses.setdefault(status, {"description": description, "content": _JSON_ERROR})


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with one that documents the statuses every route may answer (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            for methods in schema.get("paths", {}).values():
                for method, operation in methods.items():
                    if isinstance(operation, dict):
                        _document_operation(operation, "requestBody" in operation or method in ("post", "put"))
            # FastAPI's 422 body shapes are referenced nowhere now; keeping them would only mislead.
            components = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
