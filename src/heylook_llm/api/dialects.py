"""The dialect registry: each API dialect owns its routes, its error body and its mid-stream error frame.

A request's errors are written in the shape of the dialect whose route served it: every route of a dialect
marks the request (`DialectRoute`), and the error handlers read that mark. Only a path that no route serves
falls back to the dialect whose path prefix it shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from heylook_llm.errors import HeylookError

SCOPE_KEY = "heylook.dialect"

ErrorBody = Callable[[str, str, str | None, str | None], Any]
"""(message, error type, param, code) -> the JSON body of an error response."""


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    path_prefixes: tuple[str, ...]
    """Where the dialect's routes live; used only for paths that no route serves (404s)."""
    error_body: ErrorBody
    stream_error: Callable[[HeylookError], bytes]
    """The frame that ends a stream whose response has started: an SSE event, an NDJSON line, ..."""
    error_types: Mapping[int, str] = field(default_factory=dict)
    """Error type by HTTP status, for dialects whose error type follows the status (Anthropic's); others keep
    the error type the caller gives."""

    def error_type(self, status: int, default: str) -> str:
        return self.error_types.get(status, default)


def dialect_route(name: str) -> type[APIRoute]:
    """A route class that marks each request it serves as belonging to dialect `name`."""

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def marked(request: Request) -> Response:
                request.scope[SCOPE_KEY] = name
                response: Response = await handler(request)
                return response

            return marked

    DialectRoute.__name__ = f"{name.title()}Route"
    return DialectRoute


class DialectRegistry:
    def __init__(self, dialects: Sequence[Dialect], default: Dialect) -> None:
        self._by_name = {d.name: d for d in dialects}
        self._default = default

    def for_request(self, request: Request) -> Dialect:
        name = request.scope.get(SCOPE_KEY)
        if isinstance(name, str) and name in self._by_name:
            return self._by_name[name]
        path = request.url.path
        # The longest matching prefix wins: Anthropic's /v1/messages lies inside OpenAI's /v1/.
        prefixes = sorted(((p, d) for d in self._by_name.values() for p in d.path_prefixes), key=lambda x: -len(x[0]))
        for prefix, dialect in prefixes:
            if path == prefix.rstrip("/") or path.startswith(prefix):
                return dialect
        return self._default
