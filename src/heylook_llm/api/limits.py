"""How many items one request may hold (RequestLimits, flags in cli_security.py, docs/security.md), checked as
soon as the body is parsed: before images are decoded, a template rendered or a model asked for anything. A
breach is 413 naming the field and the flag that raises the limit."""

from __future__ import annotations

from collections.abc import Sized

from heylook_llm.config.settings import RequestLimits
from heylook_llm.errors import LimitExceeded


def _check(count: int, limit: int, param: str, flag: str) -> None:
    if count > limit:
        raise LimitExceeded(
            f"'{param}' holds {count:,} items; this server takes at most {limit:,} (raise it with {flag})", param=param
        )


def check_messages(limits: RequestLimits, messages: Sized | None, param: str = "messages") -> None:
    _check(len(messages or ()), limits.max_messages, param, "--max-messages")


def check_prompts(limits: RequestLimits, count: int, param: str) -> None:
    """Prompts of one completions request, texts of one embeddings request."""
    _check(count, limits.max_prompts, param, "--max-prompts")


def check_stop(limits: RequestLimits, stop: str | Sized | None, param: str = "stop") -> None:
    if stop is not None and not isinstance(stop, str):
        _check(len(stop), limits.max_stop_strings, param, "--max-stop-strings")
