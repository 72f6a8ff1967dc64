"""OpenAI image_url parts -> image references, and the multipart form of /v1/chat/completions/multipart.

The multipart form carries the same fields as the JSON body (`messages` as a JSON string, numbers and booleans
as text) plus `images` files; each `__RAW_IMAGE__` image_url placeholder takes the next file in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from heylook_llm.api.images import ImageRef
from heylook_llm.api.openai.schemas import ChatCompletionRequest, ImagePart
from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import InvalidRequest, LimitExceeded

RAW_IMAGE_PLACEHOLDER = "__RAW_IMAGE__"
_TEXT_FIELDS = frozenset({"model"})
"""Form fields kept as text even when they would parse as JSON (a model may be named "7")."""
_MAX_FORM_FIELD_BYTES = 16 * 1024 * 1024
"""Non-file form fields (the messages JSON of a long conversation)."""


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes


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


async def _read_upload(upload: UploadFile, index: int, limits: ImageSettings) -> Upload:
    name = upload.filename or f"file {index}"
    data = await upload.read(limits.max_image_bytes + 1)
    if len(data) > limits.max_image_bytes:
        raise LimitExceeded(
            f"uploaded image {index} '{name}' is larger than max_image_bytes={limits.max_image_bytes}",
            param="images",
        )
    return Upload(name, data)


async def parse_multipart_chat(request: Request, limits: ImageSettings) -> tuple[ChatCompletionRequest, list[Upload]]:
    """The chat request and the uploaded images of a multipart form; 400 naming the field when invalid."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(f"expected multipart/form-data, got '{content_type or 'no content type'}'")
    # The parser's own file count bound is left at its default so that too many images get our message.
    form = await request.form(max_part_size=_MAX_FORM_FIELD_BYTES)
    try:
        fields: dict[str, Any] = {}
        files: list[UploadFile] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in ("images", "images[]", "image"):
                    raise InvalidRequest(f"unexpected file field '{name}'; upload images as 'images'", param=name)
                files.append(value)
            elif name == "messages":
                try:
                    fields["messages"] = orjson.loads(value)
                except orjson.JSONDecodeError as exc:
                    raise InvalidRequest(f"messages is not valid JSON: {exc}", param="messages") from exc
            else:
                fields[name] = _form_value(name, value)
        if len(files) > limits.max_images_per_request:
            raise LimitExceeded(
                f"{len(files)} or more images were uploaded; the limit is "
                f"max_images_per_request={limits.max_images_per_request}",
                param="images",
            )
        try:
            body = ChatCompletionRequest.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        uploads = [await _read_upload(f, i, limits) for i, f in enumerate(files)]
    finally:
        await form.close()
    return body, uploads
