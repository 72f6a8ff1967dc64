"""Ollama wire types <-> neutral types: requests become GenerationRequests, results become Ollama's JSON."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from heylook_llm.api.images import ImageRef
from heylook_llm.api.ollama import refusals
from heylook_llm.api.ollama.go_template import render_go_template
from heylook_llm.api.ollama.schemas import ChatRequest, GenerateRequest, JsonFormat, Message, Options
from heylook_llm.config.registry import ModelEntry, model_id_problem
from heylook_llm.config.sampling import resolve_sampling
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    GrammarSpec,
    ImageData,
    ReasoningControl,
    ResponseFormat,
    SamplingOverrides,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)

log = logging.getLogger(__name__)

UNLIMITED_TOKENS = 2**31 - 1
"""num_predict -1/-2/0: generate until the context window is full (the backend caps at the window)."""
NEVER_EXPIRES = "9999-12-31T23:59:59Z"
"""/api/ps expires_at for a model kept loaded for ever (Ollama shows a far-future date too)."""


# --- names -----------------------------------------------------------------------------------------------


def new_model_id(name: str, *, param: str = "model") -> str:
    """The id to store for a new model name: `mario:latest` is kept as `mario`. A name that cannot be an id
    (config/registry.py: length, control characters, path segments) is a 400 naming `param`."""
    problem = model_id_problem(name)
    if problem is not None:
        raise InvalidRequest(f"invalid model name: the name {problem}", param=param)
    return name.removesuffix(":latest")


def display_name(model_id: str) -> str:
    """Ollama's names carry a tag; ids without one are shown with `:latest`, as Ollama shows them."""
    return model_id if ":" in model_id.rsplit("/", 1)[-1] else f"{model_id}:latest"


# --- requests --------------------------------------------------------------------------------------------


def sampling(options: Options | None, *, where: str = "options") -> SamplingOverrides:
    """Ollama options -> neutral sampling overrides; refused options raise (see refusals.OPTIONS_REFUSED)."""
    if options is None:
        return SamplingOverrides()
    refusals.check_options(options, where=where)
    max_tokens = options.num_predict
    if max_tokens is not None and max_tokens <= 0:
        max_tokens = UNLIMITED_TOKENS
    seed = options.seed if options.seed is not None and options.seed >= 0 else None
    return SamplingOverrides(
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        min_p=options.min_p,
        repeat_penalty=options.repeat_penalty,
        repeat_last_n=options.repeat_last_n,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        seed=seed,
        max_tokens=max_tokens,
        stop=options.stop,
    )


def response_format(value: JsonFormat) -> ResponseFormat | None:
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    if isinstance(value, dict):
        return value
    raise InvalidRequest('format must be "json" or a JSON schema object', param="format")


def grammar_spec(body: ChatRequest | GenerateRequest) -> GrammarSpec | None:
    """The grammar or regex extension; two output constraints at once (with `format` too) are refused."""
    given = [name for name in ("format", "grammar", "regex") if getattr(body, name) not in (None, "")]
    if len(given) > 1:
        raise InvalidRequest(f"send one output constraint, not {' and '.join(given)}", param=given[1])
    if body.grammar is not None:
        return GrammarSpec("grammar", body.grammar, "grammar")
    if body.regex is not None:
        return GrammarSpec("regex", body.regex, "regex")
    return None


def reasoning_control(body: ChatRequest | GenerateRequest) -> ReasoningControl | None:
    """`think` (true, false or a level) and the budget extension as the neutral reasoning control."""
    think, budget = body.think, body.max_reasoning_tokens
    if think is None and budget is None:
        return None
    if think is None:
        return ReasoningControl(max_tokens=budget)
    if think in (False, "", "false"):
        return ReasoningControl(enabled=False, max_tokens=budget)
    effort = think if isinstance(think, str) and think != "true" else None
    return ReasoningControl(enabled=True, effort=effort, max_tokens=budget)


def _logprob_fields(body: ChatRequest | GenerateRequest) -> dict[str, Any]:
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    return {"logprobs": bool(body.logprobs), "top_logprobs": body.top_logprobs or 0}


def _refuse_unsupported(body: ChatRequest | GenerateRequest) -> None:
    # The routes check (and log unknown fields) first; repeated here so that no caller can skip the check.
    refusals.check_generation(body)


def image_refs(body: ChatRequest | GenerateRequest) -> list[ImageRef]:
    """The request's base64 images in order, each labelled by where it came from."""
    if isinstance(body, GenerateRequest):
        return [ImageRef(f"images[{j}]", base64_data=data) for j, data in enumerate(body.images or [])]
    return [
        ImageRef(f"messages[{i}].images[{j}]", base64_data=data)
        for i, msg in enumerate(body.messages or [])
        for j, data in enumerate(msg.images or [])
    ]


def _message(msg: Message, images: Iterator[ImageData], index: int) -> ChatMessage:
    calls = [
        # Ollama's calls have no ids; the template sees positional ones.
        ToolCall(f"call_{index}_{i}", c.function.name, json.dumps(c.function.arguments, ensure_ascii=False))
        for i, c in enumerate(msg.tool_calls or [])
    ]
    return ChatMessage(
        msg.role,
        msg.content or "",
        [next(images) for _ in msg.images or []],
        tool_calls=calls,
        tool_name=msg.tool_name,
        reasoning=msg.thinking,
    )


def _tools(body: ChatRequest) -> tuple[list[ToolSpec], ToolChoice | None]:
    tools = [ToolSpec(t.function.name, t.function.description, t.function.parameters or {}) for t in body.tools or []]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("two tools have the same name", param="tools")
    choice = body.tool_choice
    if choice is None or choice == "auto":
        return tools, None
    if choice in ("none", "required"):
        return tools, ToolChoice(choice)  # type: ignore[arg-type]
    if choice not in names:
        raise InvalidRequest(
            f"tool_choice '{choice}' is neither auto, none, required nor a tool's name", param="tool_choice"
        )
    return tools, ToolChoice("function", choice)


def tool_calls_json(calls: list[ToolCall] | list[ToolCallDelta]) -> list[dict[str, Any]]:
    """Ollama's message.tool_calls: each function with its arguments as an object."""
    out = []
    for call in calls:
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError:
            arguments = call.arguments
        out.append({"function": {"name": call.name, "arguments": arguments}})
    return out


def chat_request(
    body: ChatRequest,
    entry: ModelEntry,
    settings: ServerSettings,
    images: list[ImageData] | None = None,
) -> GenerationRequest:
    """`images` are the messages' images in order (see image_refs), prepared by the image pipeline."""
    _refuse_unsupported(body)
    remaining = iter(images or [])
    tools, choice = _tools(body)
    return GenerationRequest(
        model_id=entry.id,
        sampling=resolve_sampling(sampling(body.options), entry.config.sampling_defaults(), settings.default_sampling),
        messages=[_message(m, remaining, i) for i, m in enumerate(body.messages or [])],
        tools=tools,
        tool_choice=choice,
        request_id=f"ollama-chat-{uuid.uuid4().hex[:16]}",
        origin="ollama",
        response_format=response_format(body.format),
        grammar=grammar_spec(body),
        reasoning=reasoning_control(body),
        **_logprob_fields(body),
    )


def generate_request(
    body: GenerateRequest,
    entry: ModelEntry,
    settings: ServerSettings,
    images: list[ImageData] | None = None,
) -> GenerationRequest:
    """Raw prompts and suffixes go to the model as they are; other prompts through the chat template (or the
    request's Go template) as one user turn, after `system`. Images go with that user turn, so they need it."""
    _refuse_unsupported(body)
    if body.suffix and (body.template or body.system):
        raise InvalidRequest(
            "suffix (fill-in-the-middle) is laid out with the model's own infill tokens; template and system "
            "cannot go with it",
            param="template" if body.template else "system",
        )
    if images and (body.suffix or body.raw or body.template):
        raise InvalidRequest(
            "images need the model's chat template to place them; they cannot go with raw, template or suffix",
            param="images",
        )
    resolved = resolve_sampling(sampling(body.options), entry.config.sampling_defaults(), settings.default_sampling)
    request = GenerationRequest(
        model_id=entry.id,
        sampling=resolved,
        request_id=f"ollama-generate-{uuid.uuid4().hex[:16]}",
        origin="ollama",
        response_format=response_format(body.format),
        grammar=grammar_spec(body),
        context_tokens=list(body.context) if body.context else None,
        # Ollama returns no context for raw prompts: the caller owns the formatting there.
        return_tokens=not body.raw,
        reasoning=reasoning_control(body),
        **_logprob_fields(body),
    )
    prompt = body.prompt or ""
    if body.suffix:
        request.prompt = prompt
        request.suffix = body.suffix
    elif body.raw:
        request.prompt = prompt
    elif body.template:
        system = body.system or entry.system or ""
        # No prompt a client may send is longer than the largest body: a template cannot need to write more.
        limit = settings.limits.max_body_bytes
        request.prompt = render_go_template(body.template, system=system, prompt=prompt, max_chars=limit)
    else:
        messages = [ChatMessage("system", body.system)] if body.system else []
        request.messages = [*messages, ChatMessage("user", prompt, list(images or []))]
    return request


# --- responses -------------------------------------------------------------------------------------------


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC with a Z, as Ollama writes `created_at`."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def done_reason(reason: FinishReason | None) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def measurements(stats: GenerationStats, total_seconds: float) -> dict[str, int]:
    return {
        "total_duration": nanoseconds(total_seconds),
        "load_duration": nanoseconds(stats.load_seconds),
        # The whole prompt, as Ollama reports it (clients show it as usage); a prefix-cache hit shows as a
        # shorter prompt_eval_duration, and as cached_tokens in the OpenAI dialect.
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": nanoseconds(stats.prompt_eval_seconds),
        "eval_count": stats.completion_tokens,
        "eval_duration": nanoseconds(stats.generation_seconds),
    }


def logprobs_json(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    """Ollama's `logprobs` (0.12 and later): one entry per generated token, with its `top_logprobs` when asked."""
    out = []
    for entry in entries:
        item: dict[str, Any] = {"token": entry.text, "logprob": entry.logprob, "bytes": list(entry.piece)}
        if entry.top:
            item["top_logprobs"] = [{"token": t.text, "logprob": t.logprob, "bytes": list(t.piece)} for t in entry.top]
        out.append(item)
    return out


def _assistant_message(text: str, calls: list[ToolCallDelta] | list[ToolCall] | None, thinking: str) -> dict[str, Any]:
    """Ollama's `message` of a chat piece or final line: text, thinking, and tool calls with object arguments."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = tool_calls_json(calls)
    return message


def chat_piece(
    model: str,
    text: str,
    calls: list[ToolCallDelta] | None = None,
    *,
    thinking: str = "",
    logprobs: list[TokenLogprob] | None = None,
) -> dict[str, Any]:
    message = _assistant_message(text, calls, thinking)
    piece: dict[str, Any] = {"model": model, "created_at": timestamp(), "message": message, "done": False}
    if logprobs:
        piece["logprobs"] = logprobs_json(logprobs)
    return piece


def generate_piece(
    model: str, text: str, *, thinking: str = "", logprobs: list[TokenLogprob] | None = None
) -> dict[str, Any]:
    piece: dict[str, Any] = {"model": model, "created_at": timestamp(), "response": text}
    if thinking:
        piece["thinking"] = thinking
    piece["done"] = False
    if logprobs:
        piece["logprobs"] = logprobs_json(logprobs)
    return piece


def chat_final(
    model: str,
    text: str,
    reason: FinishReason | None,
    stats: GenerationStats,
    total_seconds: float,
    calls: list[ToolCall] | None = None,
    *,
    thinking: str = "",
    logprobs: list[TokenLogprob] | None = None,
) -> dict[str, Any]:
    message = _assistant_message(text, calls, thinking)
    final: dict[str, Any] = {
        "model": model,
        "created_at": timestamp(),
        "message": message,
        "done": True,
        "done_reason": done_reason(reason),
        **measurements(stats, total_seconds),
    }
    if logprobs:
        final["logprobs"] = logprobs_json(logprobs)
    return final


def generate_final(
    model: str,
    text: str,
    reason: FinishReason | None,
    stats: GenerationStats,
    total_seconds: float,
    context: list[int] | None,
    *,
    thinking: str = "",
    logprobs: list[TokenLogprob] | None = None,
) -> dict[str, Any]:
    final: dict[str, Any] = {"model": model, "created_at": timestamp(), "response": text}
    if thinking:
        final["thinking"] = thinking
    final.update({"done": True, "done_reason": done_reason(reason)})
    if context is not None:
        final["context"] = context
    final.update(measurements(stats, total_seconds))
    if logprobs:
        final["logprobs"] = logprobs_json(logprobs)
    return final


def load_reply(model: str, *, chat: bool, unloaded: bool) -> dict[str, Any]:
    """The answer to an empty request, which only loads (or, with keep_alive 0, unloads) the model."""
    reply: dict[str, Any] = {"model": model, "created_at": timestamp()}
    if chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    reply["done"] = True
    reply["done_reason"] = "unload" if unloaded else "load"
    return reply
