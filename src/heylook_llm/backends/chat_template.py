"""Render chat messages with a model's Jinja chat template, sandboxed as Hugging Face does."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from heylook_llm.errors import InvalidRequest
from heylook_llm.types import ChatMessage


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        self.source = source
        self._template = env.from_string(source)
        self._bos = bos_token
        self._eos = eos_token

    def render(self, messages: list[ChatMessage], **extra: Any) -> str:
        return self.render_dicts([{"role": m.role, "content": m.content} for m in messages], **extra)

    def render_dicts(self, messages: list[dict[str, Any]], **extra: Any) -> str:
        """Messages as the template sees them; vision templates take content as a list of typed parts."""
        try:
            return self._template.render(
                messages=messages,
                bos_token=self._bos,
                eos_token=self._eos,
                add_generation_prompt=True,
                **extra,
            )
        except TemplateError as exc:
            # Templates reject things such as a conversation that does not alternate user/assistant.
            raise InvalidRequest(f"the model's chat template rejected the messages: {exc}", param="messages") from exc
