"""Render chat messages with a model's Jinja chat template, sandboxed as Hugging Face does, with limits on output
size, work and recursion (backends/template_sandbox.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from heylook_llm.backends.template_sandbox import LimitedSandbox, OutputLimitExceeded
from heylook_llm.backends.tokens import PromptLimit
from heylook_llm.errors import HeylookError, InvalidRequest
from heylook_llm.types import ChatMessage, ToolSpec


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        self.source = source
        self._env = env
        self._template = env.from_string(source)
        self._bos = bos_token
        self._eos = eos_token

    def render(
        self,
        messages: list[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        *,
        limit: PromptLimit | None = None,
        **extra: Any,
    ) -> str:
        """Messages and tools in the shapes Hugging Face chat templates expect (`tools` only when there are some,
        since templates test `if tools`)."""
        if tools:
            extra["tools"] = [tool_dict(t) for t in tools]
        return self.render_dicts([message_dict(m) for m in messages], limit=limit, **extra)

    def render_dicts(self, messages: list[dict[str, Any]], *, limit: PromptLimit | None = None, **extra: Any) -> str:
        """Messages as the template sees them; vision templates take content as a list of typed parts. With a
        `limit`, rendering stops (PromptTooLong) once the text is longer than the context window could hold."""
        context = {"messages": messages, "bos_token": self._bos, "eos_token": self._eos, "add_generation_prompt": True}
        try:
            return self._env.render(self._template, None if limit is None else limit.max_bytes, {**context, **extra})
        except OutputLimitExceeded:
            if limit is None:
                raise
            raise limit.error() from None
        except HeylookError:
            raise
        except TemplateError as exc:
            # Templates reject things such as a conversation that does not alternate user/assistant.
            raise InvalidRequest(f"the model's chat template rejected the messages: {exc}", param="messages") from exc
        except Exception as exc:
            # A template's own bug met by these messages (a division by zero, a string added to a number).
            raise InvalidRequest(f"the chat template failed on these messages: {exc}", param="messages") from exc


def tool_dict(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "description": tool.description}
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def message_dict(message: ChatMessage) -> dict[str, Any]:
    """A neutral message as a template's `messages` item: tool calls with their arguments as objects (what
    templates pass to `tojson`), tool results with their call id and tool name, reasoning as reasoning_content."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    name = message.name or message.tool_name
    if name is not None:
        out["name"] = name
    if message.reasoning:
        out["reasoning_content"] = message.reasoning
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def check_chat_template(source: str) -> None:
    """Compile `source` as a model's chat template is compiled at load, so that one sent in a request (Ollama's
    /api/create) is refused with a 400 naming `template` before it is stored, not when the model next loads.
    The sandbox folds no constants that could be large (`'a' * 10**10`) while compiling."""
    try:
        ChatTemplate(source)
    except Exception as exc:  # syntax errors, code nested too deep for Python (SyntaxError, RecursionError)
        raise InvalidRequest(f"template does not compile: {exc}", param="template") from exc
