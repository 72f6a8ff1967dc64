"""Wire framing shared by the dialects: orjson bodies, SSE events, NDJSON lines."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def sse_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def ndjson_line(payload: Any) -> bytes:
    return orjson.dumps(payload) + b"\n"
