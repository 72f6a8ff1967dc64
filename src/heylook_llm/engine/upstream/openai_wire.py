"""Neutral requests to an OpenAI-compatible upstream's JSON (chat completions, completions, embeddings) and its
server-sent events back to neutral chunks. Pure functions and one decoder object: no I/O here."""

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
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "tool_calls": FinishReason.TOOL_CALLS}


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.images:
        parts: list[dict[str, Any]] = [
            {
                "type": "image_url",
                "image_url": {"url": f"data:{i.mime_type};base64,{base64.b64encode(i.data).decode('ascii')}"},
            }
            for i in message.images
        ]
        parts.append({"type": "text", "text": message.content})
        out["content"] = parts
    else:
        out["content"] = message.content
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning:
        out["reasoning_content"] = message.reasoning
    return out


def _sampling(request: GenerationRequest) -> dict[str, Any]:
    s = request.sampling
    body: dict[str, Any] = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        # Extensions that vLLM, SGLang, llama-server and heylookllm read, so sampling matches a local model's.
        "top_k": s.top_k,
        "min_p": s.min_p,
        "max_tokens": s.max_tokens,
    }
    if s.repeat_penalty != 1.0:
        body["repetition_penalty"] = s.repeat_penalty
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in s.logit_bias}
    return body


def _constraints(request: GenerationRequest, body: dict[str, Any]) -> None:
    if request.grammar is not None:
        raise CapabilityError(
            f"model '{request.model_id}' runs on an upstream server, which takes no grammar or regex",
            param=request.grammar.param,
        )
    if request.response_format == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(request.response_format, dict):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": request.response_format, "strict": True},
        }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                    **({"strict": True} if t.strict else {}),
                },
            }
            for t in request.tools
        ]
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    choice = request.tool_choice
    if choice is not None and request.tools:
        if choice.mode == "function":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = choice.mode
    if request.logprobs or request.top_logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs


def request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    """(path under the base URL, JSON body) of a streamed generation."""
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    body.update(_sampling(request))
    _constraints(request, body)
    if request.messages is None:
        if request.logprobs or request.top_logprobs:
            # The legacy completions API takes a count of alternatives, not a flag.
            body["logprobs"] = request.top_logprobs
            body.pop("top_logprobs", None)
        body["prompt"] = request.prompt or ""
        if request.suffix is not None:
            body["suffix"] = request.suffix
        return "/completions", body
    body["messages"] = [_message(m) for m in request.messages]
    control = request.reasoning
    if control is not None:
        if control.max_tokens is not None:
            raise CapabilityError(
                f"model '{request.model_id}' runs on an upstream server, which takes no reasoning budget",
                param="max_reasoning_tokens",
            )
        if control.effort is not None:
            body["reasoning_effort"] = control.effort
        elif control.enabled is False:
            body["reasoning_effort"] = "none"
    return "/chat/completions", body


def _logprob(entry: dict[str, Any]) -> TokenLogprob:
    raw = entry.get("bytes")
    piece = bytes(raw) if isinstance(raw, list) else str(entry.get("token", "")).encode()
    top = tuple(
        TopLogprob(-1, str(t.get("token", "")), float(t.get("logprob", 0.0)), bytes(t.get("bytes") or []))
        for t in entry.get("top_logprobs") or []
    )
    # Upstreams report token text, not ids: -1 marks an id this server does not know.
    return TokenLogprob(-1, str(entry.get("token", "")), float(entry.get("logprob", 0.0)), top, piece)


def _completion_logprobs(block: dict[str, Any]) -> list[TokenLogprob]:
    """The legacy completions shape: parallel lists of tokens, log probabilities and top-alternative maps."""
    tokens = block.get("tokens") or []
    values = block.get("token_logprobs") or []
    tops = block.get("top_logprobs") or []
    found = []
    for i, token in enumerate(tokens):
        top_map = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        top = tuple(TopLogprob(-1, str(t), float(v), str(t).encode()) for t, v in top_map.items())
        value = values[i] if i < len(values) and values[i] is not None else 0.0
        found.append(TokenLogprob(-1, str(token), float(value), top, str(token).encode()))
    return found


class StreamDecoder:
    """Server-sent events of one streamed generation to neutral chunks. The finish reason waits for the usage
    event that follows it (or the end of the stream), so the last chunk carries the statistics."""

    def __init__(self) -> None:
        self._finish: FinishReason | None = None
        self.stats = GenerationStats()
        self.done = False
        self.counted = 0
        """Output events seen: the completion tokens of an upstream that sends no usage (llama-cpp-python)."""

    def feed(self, line: str) -> GenerationChunk | None:
        """One line of the event stream; a chunk when it carried output, else None."""
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise GenerationFailed(f"the upstream sent an event that is not JSON: {data[:200]}") from exc
        if not isinstance(event, dict):
            raise GenerationFailed("the upstream sent an event that is not a JSON object")
        if "error" in event:
            raise GenerationFailed(f"the upstream failed: {error_text(event)}")
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.stats.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                self.stats.cached_prompt_tokens = int(details.get("cached_tokens") or 0)
        choices = event.get("choices") or []
        chunk = _choice_chunk(choices[0], self) if choices and isinstance(choices[0], dict) else None
        if chunk is not None:
            self.counted += chunk.token_count
        return chunk

    def finish_reason(self) -> FinishReason | None:
        if self._finish is not None and not self.stats.completion_tokens:
            self.stats.completion_tokens = self.counted
        return self._finish

    def note_finish(self, reason: str) -> None:
        self._finish = _FINISH.get(reason, FinishReason.STOP)


def _choice_chunk(choice: dict[str, Any], decoder: StreamDecoder) -> GenerationChunk | None:
    delta = choice.get("delta")
    chunk = GenerationChunk("")
    if isinstance(delta, dict):
        chunk.text = delta.get("content") or ""
        chunk.reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            chunk.tool_calls.append(
                ToolCallDelta(
                    int(call.get("index", 0)), call.get("id"), function.get("name"), function.get("arguments") or ""
                )
            )
    else:
        chunk.text = choice.get("text") or ""  # the completions API
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        content = logprobs.get("content")
        chunk.logprobs = [_logprob(e) for e in content] if isinstance(content, list) else _completion_logprobs(logprobs)
    # Servers send one token per event; the final usage gives the exact count.
    chunk.token_count = max(1, len(chunk.logprobs)) if chunk.text or chunk.reasoning or chunk.tool_calls else 0
    if choice.get("finish_reason"):
        decoder.note_finish(str(choice["finish_reason"]))
    if not (chunk.text or chunk.reasoning or chunk.tool_calls or chunk.logprobs):
        return None
    return chunk


def error_text(body: Any) -> str:
    """The message of an upstream's error body (OpenAI's envelope, Ollama's and FastAPI's shapes)."""
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        if isinstance(error, dict):
            return str(error.get("message") or error)
        if isinstance(error, list) and error and isinstance(error[0], dict):
            return str(error[0].get("msg") or error[0])
        if error is not None:
            return str(error)
        if "message" in body:
            return str(body["message"])
    return str(body)[:500]


def error_param(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        param = body["error"].get("param")
        return str(param) if param else None
    return None


def embed_body(inputs: EmbeddingInputs, model: str) -> tuple[str, dict[str, Any]]:
    return "/embeddings", {"model": model, "input": list(inputs), "encoding_format": "float"}


def embed_result(body: Any) -> EmbeddingResult:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise GenerationFailed("the upstream's embeddings answer has no 'data' list")
    rows = sorted(body["data"], key=lambda row: int(row.get("index", 0)))
    usage = body.get("usage") or {}
    return EmbeddingResult([list(map(float, row["embedding"])) for row in rows], int(usage.get("prompt_tokens") or 0))
