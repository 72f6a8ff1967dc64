"""Responses API wire types <-> neutral types: input items to chat messages, output to the response object."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import TypeAdapter

from heylook_llm.api.images import ImageRef
from heylook_llm.api.openai.convert import reasoning_control
from heylook_llm.api.openai.responses_schemas import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputImagePart,
    InputItem,
    InputTextPart,
    MessageItem,
    OutputTextPart,
    ReasoningItem,
    RefusalPart,
    ResponsesRequest,
    ToolChoiceObject,
)
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.sampling import resolve_sampling
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    ImageData,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

ITEMS = TypeAdapter(list[InputItem])
"""Stored conversations are wire JSON; they are read back through the same item types as a request's input."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def item_json(item: InputItem) -> dict[str, Any]:
    """An input item as it is stored (wire JSON, what was sent)."""
    data: dict[str, Any] = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def stored_items(conversation: list[dict[str, Any]]) -> list[InputItem]:
    return ITEMS.validate_python(conversation)


# --- input -----------------------------------------------------------------------------------------------


def _parts(item: InputItem) -> list[ContentPart]:
    if isinstance(item, MessageItem | FunctionCallOutputItem):
        content = item.content if isinstance(item, MessageItem) else item.output
        return [] if isinstance(content, str) else list(content)
    return []


def image_refs(items: Sequence[InputItem], labels: Sequence[str]) -> list[ImageRef]:
    """One reference per input_image part, in the order `messages` takes them; `labels[i]` names item i."""
    refs: list[ImageRef] = []
    for item, label in zip(items, labels, strict=True):
        for number, part in enumerate(_parts(item)):
            if isinstance(part, InputImagePart):
                where = f"{label}.{'content' if isinstance(item, MessageItem) else 'output'}[{number}]"
                refs.append(ImageRef(where, url=part.image_url or ""))
    return refs


def _text_and_images(item: InputItem, images: Iterator[ImageData]) -> tuple[str, list[ImageData]]:
    content = item.content if isinstance(item, MessageItem) else getattr(item, "output", "")
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    taken: list[ImageData] = []
    for part in content:
        if isinstance(part, InputTextPart | OutputTextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        elif isinstance(part, InputImagePart):
            taken.append(next(images))
    return "\n".join(texts), taken


def messages(
    items: Sequence[InputItem], instructions: str | None, images: list[ImageData] | None = None
) -> list[ChatMessage]:
    """The conversation as chat messages. Function calls join the assistant turn before them (one turn with its
    text and calls, as chat templates expect); reasoning items go with the assistant turn that follows them."""
    remaining = iter(images or [])
    out: list[ChatMessage] = [ChatMessage("system", instructions)] if instructions else []
    call_names: dict[str, str] = {}
    reasoning: list[str] = []

    def assistant_turn(new: bool) -> ChatMessage:
        if new or not out or out[-1].role != "assistant":
            out.append(ChatMessage("assistant", ""))
        turn = out[-1]
        if reasoning:
            turn.reasoning = "\n".join(filter(None, [turn.reasoning, *reasoning]))
            reasoning.clear()
        return turn

    for item in items:
        if isinstance(item, MessageItem):
            text, taken = _text_and_images(item, remaining)
            if item.role == "assistant":
                turn = assistant_turn(new=True)
                turn.content, turn.images = text, taken
            else:
                out.append(ChatMessage("system" if item.role == "developer" else item.role, text, taken))
        elif isinstance(item, FunctionCallItem):
            assistant_turn(new=False).tool_calls.append(ToolCall(item.call_id, item.name, item.arguments))
            call_names[item.call_id] = item.name
        elif isinstance(item, FunctionCallOutputItem):
            text, taken = _text_and_images(item, remaining)
            result = ChatMessage("tool", text, taken, tool_call_id=item.call_id)
            result.tool_name = call_names.get(item.call_id)
            out.append(result)
        elif isinstance(item, ReasoningItem):
            texts = [part.text for part in item.content or []]
            texts += [str(part.get("text", "")) for part in item.summary if not item.content]
            reasoning.append("\n".join(t for t in texts if t))
    return out


def _tools(body: ResponsesRequest) -> tuple[list[ToolSpec], ToolChoice | None]:
    definitions = [t for t in body.tools or [] if isinstance(t, FunctionTool)]
    tools = [ToolSpec(t.name, t.description or "", t.parameters or {}, t.strict is not False) for t in definitions]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: two tools have the same name", param="tools")
    choice = body.tool_choice
    if choice is None:
        return tools, None
    if isinstance(choice, str):
        if choice != "none" and not tools:
            raise InvalidRequest(f"tool_choice '{choice}' needs tools", param="tool_choice")
        return tools, ToolChoice(choice)
    if choice.name is None:
        raise InvalidRequest("tool_choice.name: required with type 'function'", param="tool_choice.name")
    if choice.name not in names:
        raise InvalidRequest(f"tool_choice names '{choice.name}', which is not among the tools", param="tool_choice")
    return tools, ToolChoice("function", choice.name)


def _response_format(body: ResponsesRequest) -> ResponseFormat | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    return fmt.schema_


def generation_request(
    body: ResponsesRequest,
    items: Sequence[InputItem],
    entry: ModelEntry,
    settings: ServerSettings,
    images: list[ImageData] | None = None,
) -> GenerationRequest:
    """`items`: the stored conversation of `previous_response_id` (if any), then this request's input."""
    tools, choice = _tools(body)
    effort = body.reasoning.effort if body.reasoning else None
    return GenerationRequest(
        model_id=entry.id,
        sampling=resolve_sampling(body.sampling(), entry.config.sampling_defaults(), settings.default_sampling),
        messages=messages(items, body.instructions, images),
        request_id=new_id("resp"),
        origin="openai",
        response_format=_response_format(body),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        reasoning=reasoning_control(effort, body.max_reasoning_tokens),
    )


# --- output ----------------------------------------------------------------------------------------------


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """The whole reasoning text as `reasoning_text` content; no summary (nothing here writes one)."""
    content = [{"type": "reasoning_text", "text": text}] if text or status != "in_progress" else []
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [output_text(text)]
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


def function_call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def output_items(text: str, calls: list[ToolCall], reasoning: str, reason: FinishReason | None) -> list[dict[str, Any]]:
    status = "incomplete" if reason == FinishReason.LENGTH else "completed"
    items: list[dict[str, Any]] = []
    if reasoning:
        items.append(reasoning_item(new_id("rs"), reasoning, status))
    if text or not calls:
        items.append(message_item(new_id("msg"), text, status))
    for call in calls:
        # call_id is what the client's function_call_output answers: never empty.
        named = call if call.id else ToolCall(new_id("call"), call.name, call.arguments)
        items.append(function_call_item(new_id("fc"), named, status))
    return items


def usage(stats: GenerationStats) -> dict[str, Any]:
    """OpenAI's input_tokens counts the whole prompt; cached_tokens is the part read from the prefix cache;
    reasoning_tokens is the part of output_tokens the reasoning split counted (docs/reasoning.md)."""
    return {
        "input_tokens": stats.prompt_tokens,
        "input_tokens_details": {"cached_tokens": stats.cached_prompt_tokens, "cache_write_tokens": 0},
        "output_tokens": stats.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": stats.reasoning_tokens},
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def _tool_json(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict if tool.strict is not None else True,
    }


def _tool_choice_json(choice: str | ToolChoiceObject | None) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return {"type": choice.type, "name": choice.name}


def _text_json(body: ResponsesRequest) -> dict[str, Any]:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type != "json_schema":
        return {"format": {"type": fmt.type if fmt else "text"}, "verbosity": "medium"}
    schema_format: dict[str, Any] = {
        "type": "json_schema",
        "name": fmt.name or "response",
        "schema": fmt.schema_,
        "strict": bool(fmt.strict),
    }
    if fmt.description is not None:
        schema_format["description"] = fmt.description
    return {"format": schema_format, "verbosity": "medium"}


def response_object(
    body: ResponsesRequest,
    request: GenerationRequest,
    created_at: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    stats: GenerationStats | None,
    stored: bool,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The response as OpenAI's `Response` object; `stats` None while it is still running (or failed)."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    effort = body.reasoning.effort if body.reasoning else None
    response = {
        "id": request.request_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": body.instructions,
        "model": request.model_id,
        "output": output,
        "parallel_tool_calls": body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": effort, "summary": None},
        "store": stored,
        "background": False,
        "service_tier": "default",
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "max_output_tokens": body.max_output_tokens,
        "text": _text_json(body),
        "tool_choice": _tool_choice_json(body.tool_choice),
        "tools": [_tool_json(t) for t in body.tools or [] if isinstance(t, FunctionTool)],
        "truncation": "disabled",
        "metadata": body.metadata or {},
    }
    if stats is not None:
        # Not nullable in OpenAI's schema: left out until the figures exist.
        response["usage"] = usage(stats)
    return response


def status_of(reason: FinishReason | None) -> str:
    return "incomplete" if reason == FinishReason.LENGTH else "completed"
