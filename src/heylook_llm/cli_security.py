"""`serve` flags for access control and request limits (docs/security.md), and the settings they make."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from heylook_llm.config.settings import MIB, AccessSettings, ImageSettings, RequestLimits

API_KEYS_ENV = "HEYLOOK_API_KEYS"
"""Environment variable with API keys, separated by commas or whitespace (kept out of `ps` output)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than 1")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of megabytes") from None
    if not 0.001 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text} MB is outside 0.001 to 1000000")
    return value


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    access = parser.add_argument_group("access control (docs/security.md)")
    access.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="require this key on every request but /health (Authorization: Bearer KEY, or x-api-key: KEY); "
        f"repeatable; {API_KEYS_ENV} and --api-key-file add more and keep keys out of the process list",
    )
    access.add_argument(
        "--api-key-file",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a file of API keys, one a line (blank lines and lines starting with # are skipped); repeatable",
    )
    access.add_argument(
        "--allowed-origins",
        type=_comma_list,
        action="append",
        default=[],
        metavar="ORIGINS",
        help="web origins whose pages may call the server (CORS), comma-separated, '*' patterns allowed "
        "(https://app.example.com, https://*.example.com); loopback origins and the server's own are always "
        "allowed, requests from any other page are refused (403)",
    )
    access.add_argument(
        "--allowed-hosts",
        type=_comma_list,
        action="append",
        default=None,
        metavar="HOSTS",
        help="Host names the server answers to, comma-separated (name, name:port, *.example.com, '*' for any), "
        "besides localhost, 127.0.0.1 and [::1]; default: only those when bound to a loopback address, any "
        "otherwise; other names get 403 (this stops DNS rebinding)",
    )
    limits = parser.add_argument_group("request limits (docs/security.md)")
    defaults, images = RequestLimits(), ImageSettings()
    limits.add_argument(
        "--max-body-mb",
        type=_megabytes,
        default=defaults.max_body_bytes / MIB,
        metavar="MB",
        help=f"largest request body, refused with 413 while it is read (default: {defaults.max_body_bytes // MIB})",
    )
    limits.add_argument(
        "--max-messages",
        type=_positive_int,
        default=defaults.max_messages,
        metavar="N",
        help=f"messages in one chat request (default: {defaults.max_messages})",
    )
    limits.add_argument(
        "--max-prompts",
        type=_positive_int,
        default=defaults.max_prompts,
        metavar="N",
        help=f"prompts in one completions request, texts in one embeddings request (default: {defaults.max_prompts})",
    )
    limits.add_argument(
        "--max-stop-strings",
        type=_positive_int,
        default=defaults.max_stop_strings,
        metavar="N",
        help=f"stop strings in one request (default: {defaults.max_stop_strings})",
    )
    limits.add_argument(
        "--max-images",
        type=_positive_int,
        default=images.max_images_per_request,
        metavar="N",
        help=f"images in one request (default: {images.max_images_per_request})",
    )
    limits.add_argument(
        "--prompt-bytes-per-token",
        type=_positive_int,
        default=defaults.prompt_bytes_per_token,
        metavar="N",
        help="a prompt longer than N bytes for each token of the model's context window is refused before it is "
        f"tokenized, and chat templates stop there (default: {defaults.prompt_bytes_per_token})",
    )


def read_key_file(path: Path) -> list[str]:
    """Keys from a file, one a line; raises ValueError naming the file when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--api-key-file {path}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def access_settings(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> AccessSettings:
    """Keys from --api-key, --api-key-file and HEYLOOK_API_KEYS; raises ValueError for an unreadable key file."""
    keys = [k.strip() for k in args.api_key if k.strip()]
    for path in args.api_key_file:
        keys += read_key_file(path)
    keys += environ.get(API_KEYS_ENV, "").replace(",", " ").split()
    hosts = None if args.allowed_hosts is None else tuple(h for group in args.allowed_hosts for h in group)
    return AccessSettings(
        api_keys=tuple(dict.fromkeys(keys)),
        allowed_origins=tuple(o for group in args.allowed_origins for o in group),
        allowed_hosts=hosts,
    )


def request_limits(args: argparse.Namespace) -> RequestLimits:
    return RequestLimits(
        max_body_bytes=round(args.max_body_mb * MIB),
        max_messages=args.max_messages,
        max_prompts=args.max_prompts,
        max_stop_strings=args.max_stop_strings,
        prompt_bytes_per_token=args.prompt_bytes_per_token,
    )


def image_settings(args: argparse.Namespace) -> ImageSettings:
    return ImageSettings(max_images_per_request=args.max_images)
