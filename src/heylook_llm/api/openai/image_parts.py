"""OpenAI image_url parts -> image references, and the multipart form of /v1/chat/completions/multipart.

The multipart form carries the same fields as the JSON body (`messages` as a JSON string, numbers and booleans
as text) plus `images` files; each `__RAW_IMAGE__` image_url placeholder takes the next file in order. The form is
split with `bytes.find` on the body as read, and each file stays a view into it up to the image decoder: no
base64, no spooled temporary files, no copy per chunk (Starlette's form parser writes every file to a
SpooledTemporaryFile, on disk past 1 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from python_multipart.multipart import parse_options_header

from heylook_llm.api.images import ImageRef
from heylook_llm.api.openai.schemas import ChatCompletionRequest, ImagePart
from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import InvalidRequest, LimitExceeded

RAW_IMAGE_PLACEHOLDER = "__RAW_IMAGE__"
_TEXT_FIELDS = frozenset({"model"})
"""Form fields kept as text even when they would parse as JSON (a model may be named "7")."""
_MAX_FORM_FIELD_BYTES = 16 * 1024 * 1024
"""Non-file form fields (the messages JSON of a long conversation)."""
_MAX_PARTS = 1000
"""Parts of one form (Starlette's default bound on form fields)."""
_MAX_PART_HEADER_BYTES = 16 * 1024
_MAX_BOUNDARY_BYTES = 70
"""RFC 2046's longest boundary."""


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes | memoryview
    """The file's bytes; a view into the request body for multipart uploads."""


def image_refs(body: ChatCompletionRequest, uploads: list[Upload] | None = None) -> list[ImageRef]:
    """One reference per image_url part, in message order; placeholders take the uploads in order."""
    files = uploads or []
    placeholders = sum(
        1
        for msg in body.messages
        if isinstance(msg.content, list)
        for part in msg.content
        if isinstance(part, ImagePart) and part.image_url.url == RAW_IMAGE_PLACEHOLDER
    )
    if placeholders != len(files):
        raise InvalidRequest(
            f"the messages hold {placeholders} {RAW_IMAGE_PLACEHOLDER} placeholders but {len(files)} image files "
            "were uploaded; they must match in number",
            param="images",
        )
    refs: list[ImageRef] = []
    taken = 0
    for i, msg in enumerate(body.messages):
        if not isinstance(msg.content, list):
            continue
        for j, part in enumerate(msg.content):
            if not isinstance(part, ImagePart):
                continue
            label = f"messages[{i}].content[{j}]"
            if part.image_url.url == RAW_IMAGE_PLACEHOLDER:
                upload = files[taken]
                refs.append(ImageRef(f"{label} (uploaded file {taken} '{upload.filename}')", data=upload.data))
                taken += 1
            else:
                refs.append(ImageRef(label, url=part.image_url.url))
    return refs


def _form_value(name: str, value: str) -> Any:
    if name in _TEXT_FIELDS:
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value  # plain text, such as a stop string


@dataclass(frozen=True, slots=True)
class FormPart:
    name: str
    filename: str | None
    """Set for file parts (the part's Content-Disposition has a filename, as browsers and SDKs send files)."""
    data: memoryview
    """The part's bytes, a view into the request body (no copy)."""


def form_boundary(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise InvalidRequest(f"expected multipart/form-data, got '{content_type or 'no content type'}'")
    boundary = params.get(b"boundary", b"")
    if not 1 <= len(boundary) <= _MAX_BOUNDARY_BYTES:
        raise InvalidRequest("the multipart/form-data content type needs a boundary of 1 to 70 characters")
    return boundary


def split_form(body: bytes, boundary: bytes) -> list[FormPart]:
    """The parts of a multipart/form-data body (RFC 7578), found with `bytes.find` on the body as read: each part's
    data is a view into `body`, so nothing is copied or spooled to a file."""
    delimiter = b"\r\n--" + boundary
    view = memoryview(body)
    # The first delimiter may open the body without the CRLF in front of it.
    start = body.find(delimiter[2:])
    if start < 0:
        raise InvalidRequest("the multipart body holds no part (its boundary never appears)")
    pos = start + len(delimiter) - 2
    parts: list[FormPart] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # the closing delimiter; anything after it is an epilogue
        if not body.startswith(b"\r\n", pos):
            raise InvalidRequest("the multipart body is malformed (no line break after a boundary)")
        if len(parts) >= _MAX_PARTS:
            raise InvalidRequest(f"the multipart body has more than {_MAX_PARTS} parts")
        pos += 2
        if body.startswith(b"\r\n", pos):
            header_end, content_start = pos, pos + 2  # a part without headers
        else:
            header_end = body.find(b"\r\n\r\n", pos, pos + _MAX_PART_HEADER_BYTES)
            if header_end < 0:
                raise InvalidRequest("the multipart body is malformed (a part's headers do not end)")
            content_start = header_end + 4
        end = body.find(delimiter, content_start)
        if end < 0:
            raise InvalidRequest("the multipart body is cut short (its closing boundary is missing)")
        parts.append(_part(bytes(view[pos:header_end]), view[content_start:end]))
        pos = end + len(delimiter)


def _part(headers: bytes, data: memoryview) -> FormPart:
    disposition = b""
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            disposition = value.strip()
    kind, params = parse_options_header(disposition)
    if kind != b"form-data" or b"name" not in params:
        raise InvalidRequest("a multipart part has no Content-Disposition: form-data header with a name")
    filename = params.get(b"filename")
    return FormPart(
        params[b"name"].decode("utf-8", "replace"),
        filename.decode("utf-8", "replace") if filename is not None else None,
        data,
    )


def _text(part: FormPart) -> str:
    if len(part.data) > _MAX_FORM_FIELD_BYTES:
        raise LimitExceeded(
            f"form field '{part.name}' is larger than {_MAX_FORM_FIELD_BYTES // (1024 * 1024)} MB", param=part.name
        )
    try:
        return str(part.data, "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"form field '{part.name}' is not UTF-8 text: {exc}", param=part.name) from exc


def _upload(part: FormPart, index: int, limits: ImageSettings) -> Upload:
    name = part.filename or f"file {index}"
    if len(part.data) > limits.max_image_bytes:
        raise LimitExceeded(
            f"uploaded image {index} '{name}' is larger than max_image_bytes={limits.max_image_bytes}",
            param="images",
        )
    return Upload(name, part.data)


async def parse_multipart_chat(request: Request, limits: ImageSettings) -> tuple[ChatCompletionRequest, list[Upload]]:
    """The chat request and the uploaded images of a multipart form; 400 naming the field when invalid.

    The body is read once (the security layer has already bounded it by --max-body-mb) and split in place:
    uploads are views into it, handed to the image pipeline without base64, copies or temporary files."""
    boundary = form_boundary(request.headers.get("content-type", ""))
    parts = split_form(await request.body(), boundary)
    fields: dict[str, Any] = {}
    files: list[FormPart] = []
    for part in parts:
        if part.filename is not None:
            if part.name not in ("images", "images[]", "image"):
                raise InvalidRequest(f"unexpected file field '{part.name}'; upload images as 'images'", param=part.name)
            files.append(part)
        elif part.name == "messages":
            try:
                fields["messages"] = orjson.loads(part.data)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(f"messages is not valid JSON: {exc}", param="messages") from exc
        else:
            fields[part.name] = _form_value(part.name, _text(part))
    if len(files) > limits.max_images_per_request:
        raise LimitExceeded(
            f"{len(files)} images were uploaded; the limit is max_images_per_request={limits.max_images_per_request}",
            param="images",
        )
    try:
        body = ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    return body, [_upload(part, i, limits) for i, part in enumerate(files)]
