"""Neutral requests to an Ollama upstream's JSON (/api/chat, /api/generate, /api/embed) and its NDJSON lines
back to neutral chunks. Pure functions and one decoder object: no I/O here."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from heylook_llm.errors import CapabilityError, GenerationFailed
from heylook_llm.types import (
    ChatMessage,
    EmbeddingInputs,
    EmbeddingResult,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    ToolCallDelta,
)


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        out["images"] = [base64.b64encode(i.data).decode("ascii") for i in message.images]
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            try:
                arguments = orjson.loads(call.arguments) if call.arguments else {}
            except orjson.JSONDecodeError:
                arguments = {}
            calls.append({"function": {"name": call.name, "arguments": arguments}})
        out["tool_calls"] = calls
    if message.tool_name is not None:
        out["tool_name"] = message.tool_name
    if message.reasoning:
        out["thinking"] = message.reasoning
    return out


def _options(request: GenerationRequest) -> dict[str, Any]:
    s = request.sampling
    options: dict[str, Any] = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "repeat_penalty": s.repeat_penalty,
        "repeat_last_n": s.repeat_last_n,
        "num_predict": s.max_tokens,
    }
    if s.presence_penalty:
        options["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        options["frequency_penalty"] = s.frequency_penalty
    if s.seed is not None:
        options["seed"] = s.seed
    if s.stop:
        options["stop"] = list(s.stop)
    return options


def _refuse(request: GenerationRequest, what: str, param: str) -> CapabilityError:
    return CapabilityError(f"model '{request.model_id}' runs on an Ollama upstream, which takes no {what}", param=param)


def request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of a streamed generation on Ollama's native API."""
    if request.grammar is not None:
        raise _refuse(request, "grammar or regex", request.grammar.param)
    if request.sampling.logit_bias:
        raise _refuse(request, "logit_bias", "logit_bias")
    if request.logprobs or request.top_logprobs:
        raise _refuse(request, "logprobs", "logprobs")
    body: dict[str, Any] = {"model": model, "stream": True, "options": _options(request)}
    if request.response_format is not None:
        body["format"] = request.response_format
    choice = request.tool_choice
    if choice is not None and choice.mode in ("required", "function") and request.tools:
        raise _refuse(request, "tool_choice that forces a call (Ollama has no tool_choice)", "tool_choice")
    if request.tools and (choice is None or choice.mode != "none"):
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in request.tools
        ]
    control = request.reasoning
    if control is not None:
        if control.max_tokens is not None:
            raise _refuse(request, "reasoning budget", "max_reasoning_tokens")
        if control.effort is not None and control.effort != "none":
            body["think"] = control.effort
        elif control.enabled is not None:
            body["think"] = control.enabled
    if request.messages is None:
        body["prompt"] = request.prompt or ""
        body["raw"] = True
        if request.suffix is not None:
            body["suffix"] = request.suffix
            body["raw"] = False  # Ollama fills in the middle through the model's template only
        return "/api/generate", body
    body["messages"] = [_message(m) for m in request.messages]
    return "/api/chat", body


class LineDecoder:
    """NDJSON lines of one streamed generation to neutral chunks; the last line carries Ollama's measurements."""

    def __init__(self) -> None:
        self.stats = GenerationStats()
        self.done = False
        self._finish: FinishReason | None = None
        self._calls = 0

    def feed(self, line: str) -> GenerationChunk | None:
        line = line.strip()
        if not line:
            return None
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise GenerationFailed(f"the upstream sent a line that is not JSON: {line[:200]}") from exc
        if not isinstance(event, dict):
            raise GenerationFailed("the upstream sent a line that is not a JSON object")
        if "error" in event:
            raise GenerationFailed(f"the upstream failed: {event['error']}")
        chunk = GenerationChunk("")
        message = event.get("message")
        if isinstance(message, dict):
            chunk.text = message.get("content") or ""
            chunk.reasoning = message.get("thinking") or ""
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                arguments = function.get("arguments")
                text = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
                chunk.tool_calls.append(ToolCallDelta(self._calls, f"call_{self._calls}", function.get("name"), text))
                self._calls += 1
        else:
            chunk.text = event.get("response") or ""
            chunk.reasoning = event.get("thinking") or ""
        if chunk.text or chunk.reasoning or chunk.tool_calls:
            chunk.token_count = 1
        if event.get("done"):
            self.done = True
            self.stats.prompt_tokens = int(event.get("prompt_eval_count") or 0)
            self.stats.completion_tokens = int(event.get("eval_count") or 0)
            reason = event.get("done_reason")
            self._finish = FinishReason.LENGTH if reason == "length" else FinishReason.STOP
            if self._calls:
                self._finish = FinishReason.TOOL_CALLS
        return chunk if (chunk.text or chunk.reasoning or chunk.tool_calls) else None

    def finish_reason(self) -> FinishReason | None:
        return self._finish


def embed_body(inputs: EmbeddingInputs, model: str, truncate: bool) -> tuple[str, dict[str, Any]]:
    if any(not isinstance(i, str) for i in inputs):
        raise CapabilityError("an Ollama upstream embeds texts only, not token ids", param="input")
    return "/api/embed", {"model": model, "input": list(inputs), "truncate": truncate}


def embed_result(body: Any) -> EmbeddingResult:
    if not isinstance(body, dict) or not isinstance(body.get("embeddings"), list):
        raise GenerationFailed("the upstream's embed answer has no 'embeddings' list")
    return EmbeddingResult(
        [list(map(float, row)) for row in body["embeddings"]], int(body.get("prompt_eval_count") or 0)
    )
