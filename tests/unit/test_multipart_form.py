"""The multipart/form-data splitter of /v1/chat/completions/multipart, on bodies encoded by httpx (a real client)."""

from __future__ import annotations

import httpx
import pytest

from heylook_llm.api.openai.image_parts import form_boundary, split_form
from heylook_llm.errors import InvalidRequest

pytestmark = pytest.mark.unit

# Bytes that look like form syntax inside a file: a CRLF, dashes, a near-miss of the boundary.
TRICKY = b"\x89PNG\r\n--\r\n\r\n--not-the-boundary\r\n" + bytes(range(256)) * 40


def _encoded(data: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://host/", data=data, files=files)
    return request.read(), form_boundary(request.headers["content-type"])


def test_fields_and_files_come_back_in_order_as_views_of_the_body() -> None:
    body, boundary = _encoded(
        {"model": "m", "messages": '[{"role": "user", "content": "hi"}]', "stop": "é\r\n"},
        [("images", ("a.png", TRICKY, "image/png")), ("images", ("b b.jpg", b"", "image/jpeg"))],
    )
    parts = split_form(body, boundary)
    assert [(p.name, p.filename) for p in parts] == [
        ("model", None),
        ("messages", None),
        ("stop", None),
        ("images", "a.png"),
        ("images", "b b.jpg"),
    ]
    assert str(parts[2].data, "utf-8") == "é\r\n"
    assert parts[3].data == TRICKY and parts[4].data == b""
    # A view into the body, not a copy.
    assert parts[3].data.obj is body


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda body: body[:-10], "cut short"),
        (lambda body: body.replace(b"Content-Disposition", b"Content-Dispositiox", 1), "Content-Disposition"),
        (lambda body: b"no boundary here", "no part"),
    ],
)
def test_malformed_bodies_are_400s(cut: object, message: str) -> None:
    body, boundary = _encoded({"model": "m"}, [("images", ("a.png", b"x", "image/png"))])
    assert callable(cut)
    with pytest.raises(InvalidRequest, match=message):
        split_form(cut(body), boundary)


def test_the_content_type_must_be_a_form_with_a_boundary() -> None:
    with pytest.raises(InvalidRequest, match="expected multipart/form-data"):
        form_boundary("application/json")
    with pytest.raises(InvalidRequest, match="boundary"):
        form_boundary("multipart/form-data")
    assert form_boundary('multipart/form-data; boundary="a b"') == b"a b"
