"""The security layer: one ASGI middleware in front of every dialect (docs/security.md).

In order, for every HTTP request but /health:
1. Host: a name not accepted is 403 (DNS rebinding: a web page whose name resolves to 127.0.0.1 would otherwise
   be same-origin with this server);
2. Origin: a request from a web page whose origin is not accepted is 403, whatever the route (Ollama does the
   same); a CORS preflight from an accepted one is answered here, and its responses carry CORS headers;
3. API key, when keys are set: 401 without a valid one;
4. state-changing routes (model edits, load, unload) refuse bodies that are not JSON (415): a cross-site form
   or a `fetch` that skips the preflight can only send form or text bodies;
5. body size: a Content-Length over the limit is 413 unread, and a body without one is counted as it arrives
   and refused once it passes the limit; the app sees the body only once it is all in and within bounds.

Refusals are written in the error shape of the dialect the path belongs to, as the app's own errors are.
"""

from __future__ import annotations

import logging
from collections import deque

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heylook_llm.api.dialects import DialectRegistry
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.security.policy import AccessPolicy, is_state_changing, needs_no_key
from heylook_llm.config.settings import MIB, RequestLimits

log = logging.getLogger(__name__)

_PREFLIGHT_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
_DEFAULT_ALLOWED_HEADERS = "authorization, content-type, x-api-key"
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class SecurityLayer:
    def __init__(self, app: ASGIApp, *, policy: AccessPolicy, limits: RequestLimits, dialects: DialectRegistry) -> None:
        self.app = app
        self.policy = policy
        self.limits = limits
        self.dialects = dialects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            await self._refuse(
                scope,
                send,
                403,
                f"this server does not answer to the host name '{host}'; start it with --allowed-hosts to accept "
                "that name",
                "host_not_allowed",
            )
            return
        origin = headers.get("origin")
        if origin is not None:
            if not self.policy.origin_allowed(origin, host):
                await self._refuse(
                    scope,
                    send,
                    403,
                    f"requests from web pages at '{origin}' are refused; start the server with --allowed-origins "
                    "to accept that origin",
                    "origin_not_allowed",
                )
                return
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                await self._preflight(send, origin, headers)
                return
            send = _with_cors_headers(send, origin)
        await self._checked(scope, receive, send, headers)

    async def _checked(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        method, path = scope["method"], scope["path"]
        if not self._key_accepted(method, path, headers):
            offered = "authorization" in headers or "x-api-key" in headers
            message = (
                "invalid API key"
                if offered
                else "this server needs an API key: send 'Authorization: Bearer KEY' (or 'x-api-key: KEY')"
            )
            await self._refuse(scope, send, 401, message, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
            return
        if is_state_changing(method, path) and _non_json_body(headers):
            await self._refuse(
                scope,
                send,
                415,
                f"{method} {path} changes the server and takes only 'Content-Type: application/json' bodies",
                "unsupported_media_type",
            )
            return
        if method not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        await self._with_body_limit(scope, receive, send, headers)

    def _key_accepted(self, method: str, path: str, headers: Headers) -> bool:
        if not self.policy.wants_key or needs_no_key(method, path):
            return True
        return self.policy.key_matches(headers.get("authorization"), headers.get("x-api-key"))

    async def _with_body_limit(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, send, int(declared))
            return
        chunks: deque[Message] = deque()
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body: nothing to answer
            received += len(message.get("body", b""))
            if received > limit:
                await self._too_large(scope, send, None)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            # The body as it came, then the client's own messages (a disconnect while the request runs).
            return chunks.popleft() if chunks else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send, size: int | None) -> None:
        limit = self.limits.max_body_bytes
        said = f" ({size:,} bytes)" if size is not None else ""
        await self._refuse(
            scope,
            send,
            413,
            f"the request body{said} is larger than this server accepts ({limit:,} bytes, {limit / MIB:g} MB; "
            "--max-body-mb)",
            "request_too_large",
            {"Connection": "close"},
        )

    async def _refuse(
        self, scope: Scope, send: Send, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        # The route is not known yet: the dialect is the one whose path prefix the request shares.
        dialect = self.dialects.for_request(Request(scope))
        body = dialect.error_body(message, "invalid_request_error", None, code)
        log.info("%s %s -> %d: %s", scope["method"], scope["path"], status, message)
        response = OrjsonResponse(body, status_code=status, headers=headers)
        await response(scope, _no_body, send)

    async def _preflight(self, send: Send, origin: str, headers: Headers) -> None:
        answer = MutableHeaders()
        answer["Access-Control-Allow-Origin"] = origin
        answer["Access-Control-Allow-Methods"] = _PREFLIGHT_METHODS
        answer["Access-Control-Allow-Headers"] = headers.get("access-control-request-headers", _DEFAULT_ALLOWED_HEADERS)
        answer["Access-Control-Max-Age"] = "600"
        answer["Vary"] = "Origin"
        if headers.get("access-control-request-private-network") == "true":
            # Chrome asks before a public page calls a private address; the origin is one the user allowed.
            answer["Access-Control-Allow-Private-Network"] = "true"
        await send({"type": "http.response.start", "status": 204, "headers": answer.raw})
        await send({"type": "http.response.body", "body": b""})


def _non_json_body(headers: Headers) -> bool:
    """A body, or a Content-Type, that is not JSON (a request with neither, such as a bare load, passes)."""
    content_type = headers.get("content-type")
    if content_type is not None:
        return not _is_json(content_type)
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _with_cors_headers(send: Send, origin: str) -> Send:
    """Responses to an accepted cross-origin page carry the CORS headers its browser needs to read them."""

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = "Retry-After"
            headers.add_vary_header("Origin")
        await send(message)

    return send_with_cors
