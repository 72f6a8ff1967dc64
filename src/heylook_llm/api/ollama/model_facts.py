"""Ollama's descriptions of models: /api/tags rows, /api/ps rows, /api/show details, parameters, Modelfile."""

from __future__ import annotations

import hashlib
from typing import Any

from heylook_llm.api.ollama.convert import NEVER_EXPIRES, display_name, timestamp
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.service import UpstreamStatus
from heylook_llm.model_info import ModelFileInfo


def details(info: ModelFileInfo, entry: ModelEntry) -> dict[str, Any]:
    return {
        "parent_model": display_name(entry.parent_model) if entry.parent_model else "",
        "format": info.format,
        "family": info.family,
        "families": list(info.families),
        "parameter_size": info.parameter_size,
        "quantization_level": info.quantization_level,
    }


def listed_model(entry: ModelEntry, info: ModelFileInfo, digest: str) -> dict[str, Any]:
    name = display_name(entry.id)
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(info.modified_at),
        "size": info.size_bytes,
        "digest": digest,
        "details": details(info, entry),
    }


_REMOTE_DETAILS = {
    "parent_model": "",
    "format": "remote",
    "family": "",
    "families": [],
    "parameter_size": "",
    "quantization_level": "",
}


def remote_listed(status: UpstreamStatus) -> dict[str, Any]:
    """An upstream model in /api/tags: no files here, so no size or file digest (Ollama lists its remote models
    with `remote_model` and `remote_host`)."""
    name = display_name(status.entry.id)
    first = status.replicas[0]
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(0),
        "size": 0,
        "digest": hashlib.sha256(f"{first.base_url}\n{first.model}".encode()).hexdigest(),
        "details": dict(_REMOTE_DETAILS),
        "remote_model": first.model,
        "remote_host": first.base_url,
    }


def remote_shown(status: UpstreamStatus, capabilities: list[str]) -> dict[str, Any]:
    """An upstream model in /api/show: its template and files are on the upstream, so only what this server
    knows (its sampling defaults from models.yaml, what it passes through)."""
    listed = remote_listed(status)
    payload: dict[str, Any] = {
        "modelfile": f"FROM {listed['remote_model']}\n",
        "parameters": parameters_text(status.entry),
        "template": "",
        "details": listed["details"],
        "model_info": {},
        "capabilities": capabilities,
        "modified_at": listed["modified_at"],
        "remote_model": listed["remote_model"],
        "remote_host": listed["remote_host"],
    }
    if status.entry.system:
        payload["system"] = status.entry.system
    return payload


def remote_running(status: UpstreamStatus) -> dict[str, Any]:
    """An upstream model in /api/ps: always available, with each replica's state."""
    return {
        **remote_listed(status),
        "size_vram": 0,
        "expires_at": NEVER_EXPIRES,
        "context_length": 0,
        "replicas": [
            {
                "name": r.name,
                "base_url": r.base_url,
                "model": r.model,
                "healthy": r.healthy,
                "in_flight": r.in_flight,
                "requests": r.requests,
                "errors": r.errors,
            }
            for r in status.replicas
        ],
    }


def _expiry(expires_at: float | None) -> str:
    """keep_alive is bounded (config/durations.py); a time past what dates can show still reads as never."""
    if expires_at is None:
        return NEVER_EXPIRES
    try:
        return timestamp(expires_at)
    except (OverflowError, OSError, ValueError):
        return NEVER_EXPIRES


def running_model(
    entry: ModelEntry,
    info: ModelFileInfo,
    digest: str,
    *,
    size_bytes: int,
    accelerator_bytes: int,
    expires_at: float | None,
    context_length: int,
) -> dict[str, Any]:
    name = display_name(entry.id)
    return {
        "name": name,
        "model": name,
        "size": size_bytes,
        "size_vram": accelerator_bytes,
        "digest": digest,
        "details": details(info, entry),
        "expires_at": _expiry(expires_at),
        "context_length": context_length,
    }


def _parameter_lines(entry: ModelEntry) -> list[tuple[str, str]]:
    defaults = entry.config.sampling_defaults()
    lines: list[tuple[str, str]] = []
    context = entry.config.context_size()
    if context is not None:
        lines.append(("num_ctx", str(context)))
    for name, value in (
        ("temperature", defaults.temperature),
        ("top_p", defaults.top_p),
        ("top_k", defaults.top_k),
        ("min_p", defaults.min_p),
        ("repeat_penalty", defaults.repeat_penalty),
        ("repeat_last_n", defaults.repeat_last_n),
        ("num_predict", defaults.max_tokens),
    ):
        if value is not None:
            lines.append((name, f"{value:g}" if isinstance(value, float) else str(value)))
    lines.extend(("stop", f'"{stop}"') for stop in defaults.stop or [])
    return lines


def parameters_text(entry: ModelEntry) -> str:
    """Ollama's `parameters`: one `name value` per line, names padded as `ollama show` prints them."""
    return "\n".join(f"{name:<30} {value}" for name, value in _parameter_lines(entry))


def modelfile_text(entry: ModelEntry, info: ModelFileInfo) -> str:
    lines = [
        f"# Modelfile generated by heylookllm for {display_name(entry.id)}",
        "# The chat template is Jinja (see `template`); heylookllm does not run Go templates.",
        f"FROM {info.path}",
    ]
    if entry.system:
        lines.append(f'SYSTEM """{entry.system}"""')
    lines.extend(f"PARAMETER {name} {value}" for name, value in _parameter_lines(entry))
    return "\n".join(lines) + "\n"


def model_info(info: ModelFileInfo) -> dict[str, Any]:
    """The model's own metadata; long arrays (token lists) are null unless /api/show asked for `verbose`."""
    return {k: v for k, v in info.metadata.items() if k != "tokenizer.chat_template"}
