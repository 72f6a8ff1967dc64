"""OpenAI wire types <-> neutral types."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

from heylook_llm.api.openai.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    ImagePart,
    TextPart,
)
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.sampling import resolve_sampling
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import ChatMessage, FinishReason, GenerationRequest, GenerationStats, GrammarSpec, ImageData


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _message(msg: ChatMessageIn, images: Iterator[ImageData]) -> ChatMessage:
    role = "system" if msg.role == "developer" else msg.role
    if msg.content is None or isinstance(msg.content, str):
        # An assistant turn that refused carries its words in `refusal`; they are what the model said.
        refusal = (msg.model_extra or {}).get("refusal") if role == "assistant" else None
        return ChatMessage(role, msg.content or (refusal if isinstance(refusal, str) else ""))
    texts = []
    taken: list[ImageData] = []
    for part in msg.content:
        if isinstance(part, ImagePart):
            # The images were prepared in the order of the parts (see image_parts.image_refs).
            taken.append(next(images))
        elif isinstance(part, TextPart):
            texts.append(part.text)
    return ChatMessage(role, "\n".join(texts), taken)


def chat_request(
    body: ChatCompletionRequest, entry: ModelEntry, settings: ServerSettings, images: list[ImageData] | None = None
) -> GenerationRequest:
    """`images` are the request's image_url parts, prepared in order by the image pipeline."""
    remaining = iter(images or [])
    messages = [_message(m, remaining) for m in body.messages]
    return GenerationRequest(
        model_id=entry.id,
        sampling=resolve_sampling(
            body.resolved_sampling(), entry.config.sampling_defaults(), settings.default_sampling
        ),
        messages=messages,
        request_id=new_id("chatcmpl"),
        origin="openai",
        response_format=body.response_format.neutral() if body.response_format else None,
        grammar=one_constraint(body),
    )


def one_constraint(body: ChatCompletionRequest | CompletionRequest) -> GrammarSpec | None:
    """The grammar or regex extension; two constraints at once are refused (which one would win is unclear)."""
    given = [name for name in ("grammar", "regex") if getattr(body, name) is not None]
    if isinstance(body, ChatCompletionRequest) and body.response_format and body.response_format.type != "text":
        given.append("response_format")
    if len(given) > 1:
        raise InvalidRequest(f"send one output constraint, not {' and '.join(given)}", param=given[1])
    return body.grammar_spec()


def completion_requests(
    body: CompletionRequest, entry: ModelEntry, settings: ServerSettings
) -> list[GenerationRequest]:
    """One request per choice, prompt by prompt (choice index = prompt index x n + i, as OpenAI orders them);
    with a seed, choice i of a prompt samples with seed + i."""
    sampling = resolve_sampling(body.sampling(), entry.config.sampling_defaults(), settings.default_sampling)
    request_id = new_id("cmpl")
    grammar = one_constraint(body)
    seed = sampling.seed
    return [
        GenerationRequest(
            model_id=entry.id,
            sampling=sampling if seed is None else dataclasses.replace(sampling, seed=seed + i),
            prompt=prompt,
            suffix=body.suffix,
            request_id=request_id,
            origin="openai",
            grammar=grammar,
        )
        for prompt in body.texts()
        for i in range(body.n)
    ]


def finish_reason(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    return "length" if reason is FinishReason.LENGTH else "stop"


def usage(stats: list[GenerationStats]) -> dict[str, Any]:
    prompt = sum(s.prompt_tokens for s in stats)
    completion = sum(s.completion_tokens for s in stats)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(s.cached_prompt_tokens for s in stats)},
    }


def chat_response(
    request: GenerationRequest, text: str, reason: FinishReason | None, stats: GenerationStats
) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model_id,
        "choices": [
            {
                "index": 0,
                # OpenAI's ChatCompletionResponseMessage requires `refusal` (null unless the model refused).
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(reason),
            }
        ],
        "usage": usage([stats]),
    }


def chat_chunk(
    request: GenerationRequest, created: int, delta: dict[str, Any], reason: FinishReason | None = None
) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": request.model_id,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason(reason)}],
    }


def usage_chunk(request: GenerationRequest, created: int, obj: str, stats: list[GenerationStats]) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": obj,
        "created": created,
        "model": request.model_id,
        "choices": [],
        "usage": usage(stats),
    }


def completion_choice(index: int, text: str, reason: FinishReason | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason(reason)}


def completion_response(
    request: GenerationRequest, choices: list[dict[str, Any]], stats: list[GenerationStats]
) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.model_id,
        "choices": choices,
        "usage": usage(stats),
    }


def completion_chunk(request: GenerationRequest, created: int, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": "text_completion",
        "created": created,
        "model": request.model_id,
        "choices": [choice],
    }
