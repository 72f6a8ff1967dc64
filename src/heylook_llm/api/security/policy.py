"""Who may call the server: API keys, the Host names it answers to and the web origins whose pages may call it
(docs/security.md). Pure decisions over header values; the ASGI layer (layer.py) applies them to each request."""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
from dataclasses import dataclass

from heylook_llm.config.settings import AccessSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Host names that always reach this machine: a DNS-rebinding page cannot make a browser send them for its own
site, so they are always accepted."""
UNPROTECTED_PATHS = ("/health",)
"""Answered to anyone: liveness checks carry no key and reveal nothing."""
PAGE_PATHS = ("/ui", "/ui/")
"""The web page and its files (under /ui/) hold no data and no secret; the page asks the user for the key and
sends it with every API call, so the page itself must load without one."""
STATE_CHANGING_PATHS = ("/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push")
"""Ollama routes that edit models.yaml (or would fetch models); with load and unload below, these refuse bodies
that are not JSON, which a cross-site form or `fetch` without a CORS preflight cannot send."""


def is_loopback_address(host: str) -> bool:
    """True for a bind address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, str | None]:
    """`name:port` -> (name, port); IPv6 addresses keep their brackets (`[::1]:8080` -> ('[::1]', '8080'))."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, None
        rest = value[end + 1 :]
        return value[: end + 1], (rest[1:] if rest.startswith(":") else None)
    name, colon, port = value.partition(":")
    return name, (port if colon else None)


def _origin_host(origin: str) -> tuple[str, str, str | None] | None:
    """(scheme, host, port) of an Origin header, or None for `null` and anything else that is not an origin."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or not scheme or not rest or "/" in rest:
        return None
    host, port = split_host(rest)
    return scheme, host, port


def is_state_changing(method: str, path: str) -> bool:
    """Requests that change what the server serves or holds: Ollama's model edits, and loading or unloading a
    model through /v1/models/{id}/load|unload."""
    if method not in ("POST", "PUT", "PATCH", "DELETE"):
        return False
    if path in STATE_CHANGING_PATHS:
        return True
    return path.startswith("/v1/models/") and path.endswith(("/load", "/unload"))


def needs_no_key(method: str, path: str) -> bool:
    if path in UNPROTECTED_PATHS:
        return True
    return method in ("GET", "HEAD") and (path in PAGE_PATHS or path.startswith("/ui/"))


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    api_keys: tuple[bytes, ...]
    host_patterns: tuple[str, ...] | None
    """Accepted besides the loopback names; None: any host."""
    origin_patterns: tuple[str, ...]
    """Accepted besides the loopback origins and the server's own."""

    @classmethod
    def from_settings(cls, access: AccessSettings, bind_host: str) -> AccessPolicy:
        hosts = access.allowed_hosts
        if hosts is None and not is_loopback_address(bind_host):
            host_patterns = None  # the names this machine is reached by are not known: any
        else:
            host_patterns = tuple(h.strip().lower() for h in hosts or () if h.strip())
            if "*" in host_patterns:
                host_patterns = None
        return cls(
            api_keys=tuple(key.encode() for key in access.api_keys if key),
            host_patterns=host_patterns,
            origin_patterns=tuple(o.strip().lower().rstrip("/") for o in access.allowed_origins if o.strip()),
        )

    @property
    def wants_key(self) -> bool:
        return bool(self.api_keys)

    def host_allowed(self, host_header: str | None) -> bool:
        """A request without Host (HTTP/1.0, not a browser) cannot be a DNS-rebinding page's, so it passes."""
        if host_header is None or self.host_patterns is None:
            return True
        name, port = split_host(host_header)
        if name in LOOPBACK_NAMES:
            return True
        for pattern in self.host_patterns:
            pattern_name, pattern_port = split_host(pattern)
            if fnmatch.fnmatchcase(name, pattern_name) and (pattern_port is None or pattern_port == port):
                return True
        return False

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """Loopback origins, the server's own origin (the page it serves, reached by an accepted Host), and the
        configured ones."""
        parts = _origin_host(origin)
        if parts is not None:
            scheme, host, port = parts
            if scheme in ("http", "https") and host in LOOPBACK_NAMES:
                return True
            if host_header is not None and split_host(host_header) == (host, port):
                return True
        value = origin.strip().lower()
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in self.origin_patterns)

    def key_matches(self, authorization: str | None, x_api_key: str | None) -> bool:
        """`Authorization: Bearer KEY` (OpenAI, Ollama clients) or `x-api-key: KEY` (Anthropic clients). Every key
        is compared in constant time, so the answer's timing tells nothing about a key."""
        offered: list[bytes] = []
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                offered.append(token.strip().encode())
        if x_api_key is not None and x_api_key.strip():
            offered.append(x_api_key.strip().encode())
        matched = False
        for candidate in offered:
            for key in self.api_keys:
                matched |= hmac.compare_digest(candidate, key)
        return matched
