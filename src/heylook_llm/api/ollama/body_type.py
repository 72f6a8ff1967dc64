"""Ollama reads every request body as JSON whatever its Content-Type, and its documented `curl -d` examples send
form-encoded headers. FastAPI validates only bodies declared as JSON, so under /api/ the header is made JSON.

Routes that change the server (/api/create, copy, delete, pull, push) never get here with another type: the
security layer (api/security) refuses them first, since a cross-site form can send form-encoded bodies."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = b"application/json"


class JsonBodyForOllama:
    """ASGI middleware: requests with a body under /api/ are declared `application/json`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and scope["method"] in ("POST", "DELETE"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if not content_type.split(b";")[0].strip().endswith(b"json"):
                scope = {**scope, "headers": [*headers, (b"content-type", _JSON)]}
        await self.app(scope, receive, send)
