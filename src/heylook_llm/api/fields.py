"""Fail-closed checks on request fields, shared by the dialects.

A field of the official API that asks for something this server does not do is refused with a 400 naming it
(`UnsupportedParameter`), never accepted and dropped. Fields that change nothing here (billing tags, resource
hints) are accepted; fields nobody documents are vendor extensions, logged once per name at debug.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from heylook_llm.errors import UnsupportedParameter

log = logging.getLogger(__name__)


def is_given(value: Any) -> bool:
    """A value that asks for something: not null, false, zero, or empty."""
    return value not in (None, False, 0, "", [], {})


def is_not(*harmless: Any) -> Callable[[Any], bool]:
    """A rule's test: the value asks for something unless it is null or one of `harmless` (the API's defaults)."""

    def asks(value: Any) -> bool:
        return value is not None and value not in harmless

    return asks


@dataclass(frozen=True, slots=True)
class Refused:
    """A field of the official API that this server does not implement yet."""

    name: str
    instead: str
    """What the client can do instead, or what is supported; ends the error message."""
    asks: Callable[[Any], bool] = is_given
    """True when the value asks for the unimplemented behaviour (defaults and empty values do not)."""


def field_values(body: BaseModel) -> dict[str, Any]:
    """Every field the client sent: declared fields it set, plus undeclared ones (kept by `extra="allow"`)."""
    values = {name: getattr(body, name) for name in body.model_fields_set if name in type(body).model_fields}
    values.update(body.model_extra or {})
    return values


def check_fields(
    values: Mapping[str, Any],
    refused: Sequence[Refused],
    known: Iterable[str],
    *,
    prefix: str = "",
) -> list[str]:
    """Raise `UnsupportedParameter` for the first refused field whose value asks for something; return the names
    that are neither refused nor known (vendor extensions), for the caller to note."""
    for rule in refused:
        if rule.name in values and rule.asks(values[rule.name]):
            param = f"{prefix}{rule.name}"
            raise UnsupportedParameter(f"'{param}' is not supported by this server: {rule.instead}", param=param)
    listed = set(known) | {rule.name for rule in refused}
    return sorted(f"{prefix}{name}" for name in values if name not in listed)


class UnknownFieldLog:
    """Logs each unknown request field once per dialect: clients send many extensions, and a log line per
    request would drown everything else."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def note(self, dialect: str, names: Iterable[str]) -> None:
        with self._lock:
            new = [name for name in names if (dialect, name) not in self._seen]
            self._seen.update((dialect, name) for name in new)
        for name in new:
            log.debug(
                "%s request field '%s' is not part of the API this server implements; it has no effect", dialect, name
            )
