"""Which fields of OpenAI's requests this server refuses, and which it accepts without effect.

Every request field in OpenAI's published API is either implemented (declared in schemas.py), listed here as
having no effect on a local server, or refused with a 400 naming it. docs/compatibility.md is the same list
for people; keep them together.
"""

from __future__ import annotations

from typing import Any

from heylook_llm.api.fields import Refused, check_fields, field_values, is_not
from heylook_llm.api.openai.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    EmbeddingRequest,
    OtherPart,
)
from heylook_llm.errors import UnsupportedParameter


def _not_null(value: Any) -> bool:
    # For fields where an empty object already asks for the feature (web_search_options: {} turns search on).
    return value is not None


def _beyond_text(value: Any) -> bool:
    return value is not None and (not isinstance(value, list) or any(item != "text" for item in value))


CHAT_REFUSED = (
    Refused("audio", "audio output is not available; the models here write text"),
    Refused("modalities", 'only ["text"]', _beyond_text),
    Refused("prediction", "predicted outputs are not available"),
    Refused("web_search_options", "this server has no web search", _not_null),
    Refused("verbosity", "only 'medium' (the default)", is_not("medium")),
    Refused("service_tier", "only 'auto' or 'default': there is one tier here", is_not("auto", "default")),
    Refused("store", "completions are not stored here; send store: false or leave it out"),
    Refused("moderation", "this server has no moderation", _not_null),
)
"""Chat completion fields that ask for something not implemented (the value decides; defaults pass)."""

CHAT_NO_EFFECT = (
    "user",
    "safety_identifier",
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
)
"""Chat completion fields that change nothing on a local server: accepted, no effect."""

MESSAGE_REFUSED = (Refused("audio", "audio in the history is not available"),)
MESSAGE_KNOWN = (
    "role",
    "content",
    "name",
    "refusal",
    "tool_calls",
    "tool_call_id",
    "function_call",
    "reasoning_content",
    "reasoning",
)

STREAM_OPTIONS_REFUSED = (Refused("include_obfuscation", "stream obfuscation is not available"),)

COMPLETION_REFUSED = (Refused("best_of", "only 1: generate several choices and pick one yourself", is_not(1)),)
COMPLETION_NO_EFFECT = ("user",)

EMBEDDING_NO_EFFECT = ("user",)


def _check_stream_options(body: ChatCompletionRequest | CompletionRequest) -> list[str]:
    if body.stream_options is None:
        return []
    values = field_values(body.stream_options)
    return check_fields(values, STREAM_OPTIONS_REFUSED, ["include_usage"], prefix="stream_options.")


def check_chat(body: ChatCompletionRequest) -> list[str]:
    """Refuse unimplemented fields of a chat request; return the unknown field names (vendor extensions)."""
    unknown = check_fields(field_values(body), CHAT_REFUSED, [*ChatCompletionRequest.model_fields, *CHAT_NO_EFFECT])
    for index, message in enumerate(body.messages):
        _check_parts(index, message)
        unknown += check_fields(field_values(message), MESSAGE_REFUSED, MESSAGE_KNOWN, prefix=f"messages[{index}].")
    return unknown + _check_stream_options(body)


def _check_parts(index: int, message: ChatMessageIn) -> None:
    if not isinstance(message.content, list):
        return
    for number, part in enumerate(message.content):
        if isinstance(part, OtherPart):
            param = f"messages[{index}].content[{number}].type"
            raise UnsupportedParameter(
                f"'{param}' '{part.type}' is not supported by this server: send text and image_url parts",
                param=param,
            )


def check_completion(body: CompletionRequest) -> list[str]:
    if not isinstance(body.prompt, str) and any(not isinstance(item, str) for item in body.prompt):
        raise UnsupportedParameter(
            "'prompt' as token ids is not supported by this server: send the prompt as text", param="prompt"
        )
    known = [*CompletionRequest.model_fields, *COMPLETION_NO_EFFECT]
    return check_fields(field_values(body), COMPLETION_REFUSED, known) + _check_stream_options(body)


def check_embedding(body: EmbeddingRequest) -> list[str]:
    return check_fields(field_values(body), (), [*EmbeddingRequest.model_fields, *EMBEDDING_NO_EFFECT])
