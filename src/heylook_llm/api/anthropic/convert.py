"""Anthropic Messages wire types <-> neutral types."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from heylook_llm.api.anthropic.schemas import (
    Base64Source,
    CountTokensRequest,
    ImageBlock,
    MessageIn,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from heylook_llm.api.images import ImageRef
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.sampling import resolve_sampling
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import GenerationFailed, InvalidRequest
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    ImageData,
    ReasoningControl,
    SamplingOverrides,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

TOOL_ERROR_PREFIX = "Error: "
"""Put before a tool result's text when the client marks it `is_error`: chat templates have no field for it."""


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _image_ref(block: ImageBlock, label: str) -> ImageRef:
    source = block.source
    if isinstance(source, Base64Source):
        # The pipeline reads data URLs; the media type only names the encoding, which is sniffed anyway.
        return ImageRef(label, url=f"data:{source.media_type};base64,{source.data}")
    return ImageRef(label, url=getattr(source, "url", ""))


def image_refs(body: CountTokensRequest) -> list[ImageRef]:
    """One reference per image block, in the order `messages` meets them (tool results' images included)."""
    refs: list[ImageRef] = []
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            continue
        for j, block in enumerate(message.content):
            if isinstance(block, ImageBlock):
                refs.append(_image_ref(block, f"messages[{i}].content[{j}]"))
            elif isinstance(block, ToolResultBlock) and not isinstance(block.content, str):
                for k, part in enumerate(block.content):
                    if isinstance(part, ImageBlock):
                        refs.append(_image_ref(part, f"messages[{i}].content[{j}].content[{k}]"))
    return refs


def _system(system: str | list[TextBlock] | None) -> list[ChatMessage]:
    if system is None:
        return []
    text = system if isinstance(system, str) else "\n".join(block.text for block in system)
    return [ChatMessage("system", text)] if text else []


def _tool_result(block: ToolResultBlock, images: Iterator[ImageData], call_names: dict[str, str]) -> ChatMessage:
    taken: list[ImageData] = []
    if isinstance(block.content, str):
        text = block.content
    else:
        texts = []
        for part in block.content:
            if isinstance(part, ImageBlock):
                taken.append(next(images))
            elif isinstance(part, TextBlock):
                texts.append(part.text)
        text = "\n".join(texts)
    if block.is_error:
        text = TOOL_ERROR_PREFIX + text
    message = ChatMessage("tool", text, taken, tool_call_id=block.tool_use_id)
    message.tool_name = call_names.get(block.tool_use_id)
    return message


def _messages(message: MessageIn, images: Iterator[ImageData], call_names: dict[str, str]) -> list[ChatMessage]:
    """One Anthropic message as neutral messages: tool results become role "tool" messages, in block order; the
    text and images between them stay one message of the sender's role."""
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    out: list[ChatMessage] = []
    texts: list[str] = []
    taken: list[ImageData] = []
    calls: list[ToolCall] = []
    reasoning: list[str] = []

    def flush() -> None:
        if texts or taken or calls or reasoning:
            turn = ChatMessage(message.role, "\n".join(texts), list(taken), tool_calls=list(calls))
            turn.reasoning = "\n".join(reasoning) if reasoning else None
            out.append(turn)
        texts.clear()
        taken.clear()
        calls.clear()
        reasoning.clear()

    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            taken.append(next(images))
        elif isinstance(block, ToolUseBlock):
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
            call_names[block.id] = block.name
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolResultBlock):
            flush()
            out.append(_tool_result(block, images, call_names))
    flush()
    return out or [ChatMessage(message.role, "")]


def messages(body: CountTokensRequest, images: list[ImageData] | None = None) -> list[ChatMessage]:
    """`images` are the request's image blocks, prepared in the order of `image_refs`."""
    remaining = iter(images or [])
    call_names: dict[str, str] = {}
    out = _system(body.system)
    for message in body.messages:
        out.extend(_messages(message, remaining, call_names))
    return out


def _tools(body: CountTokensRequest) -> tuple[list[ToolSpec], ToolChoice | None, bool]:
    """Tools, tool choice and whether parallel calls are allowed."""
    tools = [ToolSpec(t.name, t.description, t.input_schema or {}, bool(t.strict)) for t in body.tools or []]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: two tools have the same name", param="tools")
    choice = body.tool_choice
    if choice is None:
        return tools, None, True
    parallel = not choice.disable_parallel_tool_use
    if choice.type in ("any", "tool") and not tools:
        raise InvalidRequest(f"tool_choice: type '{choice.type}' needs tools", param="tool_choice")
    if choice.type == "auto":
        return tools, None, parallel
    if choice.type == "any":
        return tools, ToolChoice("required"), parallel
    if choice.type == "none":
        return tools, ToolChoice("none"), parallel
    if choice.name is None:
        raise InvalidRequest("tool_choice.name: required with type 'tool'", param="tool_choice.name")
    if choice.name not in names:
        raise InvalidRequest(f"tool_choice.name: '{choice.name}' is not among the tools", param="tool_choice.name")
    return tools, ToolChoice("function", choice.name), parallel


def _reasoning(body: CountTokensRequest) -> ReasoningControl | None:
    thinking = body.thinking
    if thinking is None:
        return None
    if thinking.type == "disabled":
        return ReasoningControl(enabled=False)
    # "adaptive": the model decides how long to think, so no budget.
    budget = thinking.budget_tokens if thinking.type == "enabled" else None
    return ReasoningControl(enabled=True, max_tokens=budget)


def generation_request(
    body: CountTokensRequest, entry: ModelEntry, settings: ServerSettings, images: list[ImageData] | None = None
) -> GenerationRequest:
    """The neutral request; a count_tokens body (no max_tokens, no sampling) becomes one with default sampling."""
    tools, choice, parallel = _tools(body)
    overrides = body.sampling() if isinstance(body, MessagesRequest) else SamplingOverrides()
    return GenerationRequest(
        model_id=entry.id,
        sampling=resolve_sampling(overrides, entry.config.sampling_defaults(), settings.default_sampling),
        messages=messages(body, images),
        request_id=new_message_id(),
        origin="anthropic",
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        reasoning=_reasoning(body),
    )


def stop_fields(reason: FinishReason | None, stop_sequence: str | None) -> dict[str, str | None]:
    """`stop_reason` and `stop_sequence`: the engine ends both a matched stop string and the model's own end of
    turn with FinishReason.STOP; the matched string (`stop_sequence`) tells them apart."""
    if reason == FinishReason.LENGTH:
        return {"stop_reason": "max_tokens", "stop_sequence": None}
    if reason == FinishReason.TOOL_CALLS:
        return {"stop_reason": "tool_use", "stop_sequence": None}
    if stop_sequence is not None:
        return {"stop_reason": "stop_sequence", "stop_sequence": stop_sequence}
    return {"stop_reason": "end_turn", "stop_sequence": None}


def usage(stats: GenerationStats) -> dict[str, int]:
    """Anthropic counts prompt tokens read from the cache apart: input_tokens + cache_read_input_tokens is the
    whole prompt (what count_tokens answers)."""
    return {
        "input_tokens": stats.prompt_tokens - stats.cached_prompt_tokens,
        "output_tokens": stats.completion_tokens,
        "cache_read_input_tokens": stats.cached_prompt_tokens,
        "cache_creation_input_tokens": 0,
    }


def tool_input(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `input` is; the engine's grammar makes them a JSON object."""
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise GenerationFailed(f"the model's call of '{call.name}' has arguments that are not JSON") from exc
    if not isinstance(value, dict):
        raise GenerationFailed(f"the model's call of '{call.name}' has arguments that are not a JSON object")
    return value


def content_blocks(text: str, calls: list[ToolCall], reasoning: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reasoning:
        # No signature: nothing here verifies thinking sent back, so there is nothing to sign.
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text or not calls:
        blocks.append({"type": "text", "text": text})
    blocks.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c)} for c in calls)
    return blocks


def message_response(
    request: GenerationRequest,
    text: str,
    reason: FinishReason | None,
    stats: GenerationStats,
    calls: list[ToolCall],
    reasoning: str,
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "type": "message",
        "role": "assistant",
        "model": request.model_id,
        "content": content_blocks(text, calls, reasoning),
        **stop_fields(reason, stop_sequence),
        "usage": usage(stats),
    }


def message_start(request: GenerationRequest) -> dict[str, Any]:
    """The message as `message_start` sends it: no content yet; token counts come with `message_delta`."""
    return {
        "type": "message_start",
        "message": {
            "id": request.request_id,
            "type": "message",
            "role": "assistant",
            "model": request.model_id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
