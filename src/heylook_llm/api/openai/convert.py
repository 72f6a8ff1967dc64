"""OpenAI wire types <-> neutral types."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

from heylook_llm.api.openai.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    ImagePart,
    NamedToolChoice,
    TextPart,
)
from heylook_llm.config.registry import ModelEntry
from heylook_llm.config.sampling import resolve_sampling
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    GrammarSpec,
    ImageData,
    ReasoningControl,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)


def new_id(prefix: str) -> str:
    # 96 random bits, as the first 24 hex digits of a uuid4 were, without building a UUID object.
    return f"{prefix}-{os.urandom(12).hex()}"


def _message(msg: ChatMessageIn, images: Iterator[ImageData], call_ids: dict[str, str]) -> ChatMessage:
    """`call_ids` maps each earlier call's id to its function name, so that tool results can name their tool."""
    role = {"developer": "system", "function": "tool"}.get(msg.role, msg.role)
    content = ""
    taken: list[ImageData] = []
    if msg.content is None or isinstance(msg.content, str):
        # An assistant turn that refused carries its words in `refusal`; they are what the model said.
        refusal = (msg.model_extra or {}).get("refusal") if role == "assistant" else None
        content = msg.content or (refusal if isinstance(refusal, str) else "")
    else:
        texts = []
        for part in msg.content:
            if isinstance(part, ImagePart):
                # The images were prepared in the order of the parts (see image_parts.image_refs).
                taken.append(next(images))
            elif isinstance(part, TextPart):
                texts.append(part.text)
        content = "\n".join(texts)
    calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or []]
    if msg.function_call is not None:
        calls.append(ToolCall(f"call_{len(call_ids)}", msg.function_call.name, msg.function_call.arguments))
    for call in calls:
        call_ids[call.id] = call.name
    message = ChatMessage(role, content, taken, name=msg.name if role != "tool" else None, tool_calls=calls)
    if role == "assistant":
        message.reasoning = msg.reasoning_content or msg.reasoning
    if role == "tool":
        message.tool_call_id = msg.tool_call_id
        # Legacy `function` results carry the function's name; tool results are found by their call's id.
        message.tool_name = msg.name or call_ids.get(msg.tool_call_id or "")
    return message


def _tools(body: ChatCompletionRequest) -> tuple[list[ToolSpec], ToolChoice | None]:
    """Tools and tool choice, from `tools`/`tool_choice` or the legacy `functions`/`function_call`."""
    if body.tools and body.functions:
        raise InvalidRequest("send tools or the legacy functions, not both", param="functions")
    definitions = [t.function for t in body.tools or []] or list(body.functions or [])
    tools = [ToolSpec(d.name, d.description, d.parameters or {}, bool(d.strict)) for d in definitions]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("two tools have the same name", param="tools")
    choice = body.tool_choice if body.tool_choice is not None else body.function_call
    if choice is None:
        return tools, None
    if isinstance(choice, str):
        if choice != "none" and not tools:
            raise InvalidRequest(f"tool_choice '{choice}' needs tools", param="tool_choice")
        return tools, ToolChoice(choice)
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
    if name not in names:
        raise InvalidRequest(f"tool_choice names '{name}', which is not among the tools", param="tool_choice")
    return tools, ToolChoice("function", name)


def chat_request(
    body: ChatCompletionRequest, entry: ModelEntry, settings: ServerSettings, images: list[ImageData] | None = None
) -> GenerationRequest:
    """`images` are the request's image_url parts, prepared in order by the image pipeline."""
    remaining = iter(images or [])
    call_ids: dict[str, str] = {}
    messages = [_message(m, remaining, call_ids) for m in body.messages]
    tools, choice = _tools(body)
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
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
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
        reasoning=reasoning_control(body.reasoning_effort, body.max_reasoning_tokens),
    )


def reasoning_control(effort: str | None, budget: int | None) -> ReasoningControl | None:
    """`reasoning_effort` and the budget extension: "none" turns reasoning off, a level turns it on."""
    if effort is None and budget is None:
        return None
    if effort == "none":
        return ReasoningControl(enabled=False, max_tokens=budget)
    return ReasoningControl(enabled=True if effort else None, effort=effort, max_tokens=budget)


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
            logprobs=body.logprobs is not None,
            top_logprobs=body.logprobs or 0,
        )
        for prompt in body.texts()
        for i in range(body.n)
    ]


def finish_reason(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    return {FinishReason.LENGTH: "length", FinishReason.TOOL_CALLS: "tool_calls"}.get(reason, "stop")


def usage(stats: list[GenerationStats]) -> dict[str, Any]:
    """Summed over choices; reasoning_tokens is the part of completion_tokens the reasoning split counted."""
    prompt = sum(s.prompt_tokens for s in stats)
    completion = sum(s.completion_tokens for s in stats)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(s.cached_prompt_tokens for s in stats)},
        "completion_tokens_details": {"reasoning_tokens": sum(s.reasoning_tokens for s in stats)},
    }


def reasoning_fields(reasoning: str) -> dict[str, str]:
    """Reasoning under both names clients read: `reasoning_content` (llama-server, DeepSeek, vLLM until 0.10) and
    `reasoning` (vLLM now, Ollama's /v1, LM Studio, OpenRouter, mlx-lm); Open WebUI reads either."""
    return {"reasoning_content": reasoning, "reasoning": reasoning} if reasoning else {}


def assistant_message(text: str, calls: list[ToolCall], reasoning: str = "") -> dict[str, Any]:
    """The response message: content null when the model only called tools, as OpenAI sends it."""
    # OpenAI's ChatCompletionResponseMessage requires `refusal` (null unless the model refused).
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    message.update(reasoning_fields(reasoning))
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    return message


def tool_call_deltas(deltas: list[ToolCallDelta]) -> list[dict[str, Any]]:
    """Streamed tool calls: `index` always; `id`, `type` and the name on a call's first piece."""
    out = []
    for d in deltas:
        item: dict[str, Any] = {"index": d.index}
        if d.id is not None:
            item["id"] = d.id
            item["type"] = "function"
        function: dict[str, str] = {"arguments": d.arguments}
        if d.name is not None:
            function["name"] = d.name
        item["function"] = function
        out.append(item)
    return out


def _top_json(token: str, logprob: float, piece: bytes) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(piece)}


def token_logprob_json(entry: TokenLogprob) -> dict[str, Any]:
    """OpenAI's ChatCompletionTokenLogprob."""
    out = _top_json(entry.text, entry.logprob, entry.piece)
    out["top_logprobs"] = [_top_json(t.text, t.logprob, t.piece) for t in entry.top]
    return out


def chat_logprobs(request: GenerationRequest, entries: list[TokenLogprob]) -> dict[str, Any] | None:
    """A choice's `logprobs`: null unless the request asked; every generated token (reasoning included)."""
    if not request.logprobs:
        return None
    return {"content": [token_logprob_json(e) for e in entries], "refusal": None}


def chat_response(
    request: GenerationRequest,
    text: str,
    reason: FinishReason | None,
    stats: GenerationStats,
    calls: list[ToolCall] | None = None,
    *,
    reasoning: str = "",
    logprobs: list[TokenLogprob] | None = None,
) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model_id,
        "choices": [
            {
                "index": 0,
                "message": assistant_message(text, calls or [], reasoning),
                "logprobs": chat_logprobs(request, logprobs or []),
                "finish_reason": finish_reason(reason),
            }
        ],
        "usage": usage([stats]),
    }


def chat_chunk(
    request: GenerationRequest,
    created: int,
    delta: dict[str, Any],
    reason: FinishReason | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": request.model_id,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason(reason)}],
    }


Delta = tuple[dict[str, Any], dict[str, Any] | None]
"""A stream delta and the `logprobs` sent with it."""


def chat_deltas(request: GenerationRequest, chunk: GenerationChunk) -> list[Delta]:
    """A chunk's reasoning and answer text as stream deltas, each with the `logprobs` to send along (the chunk's
    tokens go with its first delta; a chunk whose text is still held back sends them with empty content)."""
    deltas: list[dict[str, Any]] = []
    if chunk.reasoning:
        deltas.append(reasoning_fields(chunk.reasoning))
    if chunk.text:
        deltas.append({"content": chunk.text})
    logprobs = chat_logprobs(request, chunk.logprobs) if chunk.logprobs else None
    if logprobs is not None and not deltas:
        deltas.append({"content": ""})
    return [(delta, logprobs if i == 0 else None) for i, delta in enumerate(deltas)]


def usage_chunk(request: GenerationRequest, created: int, obj: str, stats: list[GenerationStats]) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "object": obj,
        "created": created,
        "model": request.model_id,
        "choices": [],
        "usage": usage(stats),
    }


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy completions shape; `offset`: where the first token's text starts in the choice's text."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return {
        "tokens": [e.text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.text: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def completion_choice(
    index: int, text: str, reason: FinishReason | None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(reason)}


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
