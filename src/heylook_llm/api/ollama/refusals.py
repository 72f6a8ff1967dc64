"""Which fields of Ollama's requests this server refuses, and which it accepts without effect.

Every field in Ollama's API reference is either implemented (declared in schemas.py), listed here as having no
effect, or refused with a 400 naming it. docs/compatibility.md is the same list for people; keep them together.
"""

from __future__ import annotations

from pydantic import BaseModel

from heylook_llm.api.fields import Refused, check_fields, field_values, is_not
from heylook_llm.api.ollama.schemas import (
    ChatRequest,
    CreateRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    Message,
    Options,
)

GENERATION_REFUSED: tuple[Refused, ...] = ()

MESSAGE_REFUSED: tuple[Refused, ...] = ()
MESSAGE_NO_EFFECT: tuple[str, ...] = ()

OPTIONS_REFUSED = (
    Refused("mirostat", "mirostat sampling is not available; use temperature, top_k, top_p or min_p", is_not(0)),
    Refused("typical_p", "typical sampling is not available; use top_p or min_p", is_not(1)),
    Refused("tfs_z", "tail-free sampling is not available (llama.cpp removed it); use min_p", is_not(1)),
)
OPTIONS_NO_EFFECT = (
    # Resource hints: the model's settings in models.yaml decide these.
    "num_keep",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "numa",
    "low_vram",
    "f16_kv",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    # Only used with mirostat, which is refused when on.
    "mirostat_tau",
    "mirostat_eta",
    # Deprecated and ignored by Ollama itself.
    "penalize_newline",
    # Speculative decoding length: changes speed, not output.
    "draft_num_predict",
)

CREATE_REFUSED = (
    Refused("renderer", "custom renderers are not available; send a Jinja chat template as template"),
    Refused("parser", "custom output parsers are not available"),
)
CREATE_NO_EFFECT = ("license",)


def check_options(options: Options | None, *, where: str = "options") -> list[str]:
    if options is None:
        return []
    known = [*Options.model_fields, *OPTIONS_NO_EFFECT]
    return check_fields(field_values(options), OPTIONS_REFUSED, known, prefix=f"{where}.")


def _check_message(index: int, message: Message) -> list[str]:
    prefix = f"messages[{index}]."
    known = [*Message.model_fields, *MESSAGE_NO_EFFECT]
    return check_fields(field_values(message), MESSAGE_REFUSED, known, prefix=prefix)


def check_generation(body: ChatRequest | GenerateRequest) -> list[str]:
    """Refuse unimplemented fields of /api/chat or /api/generate; return unknown field names (extensions)."""
    unknown = check_fields(field_values(body), GENERATION_REFUSED, [*type(body).model_fields, "name"])
    if isinstance(body, ChatRequest):
        for index, message in enumerate(body.messages or []):
            unknown += _check_message(index, message)
    return unknown + check_options(body.options)


def check_embed(body: EmbedRequest | EmbeddingsRequest) -> list[str]:
    known = [*type(body).model_fields, "name"]
    return check_fields(field_values(body), (), known) + check_options(body.options)


def check_create(body: CreateRequest, parameters: Options) -> list[str]:
    """`parameters` is the request's `parameters` read as options."""
    known = [*CreateRequest.model_fields, "from", "name", *CREATE_NO_EFFECT]
    return check_fields(field_values(body), CREATE_REFUSED, known) + check_options(parameters, where="parameters")


def unknown_fields(body: BaseModel) -> list[str]:
    """Unknown fields of a request with nothing to refuse (show, copy, delete, pull)."""
    return check_fields(field_values(body), (), [*type(body).model_fields, "name"])
