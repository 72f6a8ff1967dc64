"""Access control and request-size limits in front of every dialect (docs/security.md)."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from heylook_llm.api.dialects import DialectRegistry
from heylook_llm.api.security.layer import SecurityLayer
from heylook_llm.api.security.policy import AccessPolicy, is_loopback_address
from heylook_llm.config.settings import ServerSettings

log = logging.getLogger(__name__)

__all__ = ["AccessPolicy", "SecurityLayer", "install_security"]


def install_security(app: FastAPI, settings: ServerSettings, dialects: DialectRegistry) -> None:
    """Add the security layer; call it after every other middleware, so that it runs first."""
    policy = AccessPolicy.from_settings(settings.access, settings.host)
    if not is_loopback_address(settings.host) and not policy.wants_key:
        log.warning(
            "serving on %s, which other machines can reach, without an API key: anyone who reaches it can use the "
            "models and change models.yaml; start with --api-key (see docs/security.md)",
            settings.host,
        )
    app.add_middleware(SecurityLayer, policy=policy, limits=settings.limits, dialects=dialects)
