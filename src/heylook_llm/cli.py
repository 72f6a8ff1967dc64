"""Command line: `heylookllm [serve] | demo-models | import | models`. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from heylook_llm import __version__
from heylook_llm.cli_security import access_settings, add_security_arguments, image_settings, request_limits
from heylook_llm.config.durations import keep_alive_seconds, parse_duration_seconds
from heylook_llm.config.registry import Registry, RegistryError, load_registry
from heylook_llm.config.settings import (
    OLLAMA_DEFAULT_PORT,
    OPENAI_DEFAULT_PORT,
    ApiMode,
    ResponseStoreSettings,
    ServerSettings,
    user_cache_dir,
    user_config_dir,
)

log = logging.getLogger("heylook_llm")
COMMANDS = ("serve", "demo-models", "import", "models")


def _keep_alive_arg(text: str) -> float:
    try:
        return keep_alive_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stream_interval_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of milliseconds") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} ms is outside 0 to 1000")
    return value


def _shutdown_timeout_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} s is outside 0 to 3600")
    return value


def _store_age_arg(text: str) -> float:
    try:
        value = parse_duration_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive duration")
    return value


def _store_count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than 1")
    return value


def _add_response_store_arguments(parser: argparse.ArgumentParser) -> None:
    store = parser.add_argument_group("stored responses of /v1/responses (docs/responses.md)")
    store.add_argument(
        "--no-response-store",
        action="store_true",
        help="keep no responses: store is ignored, GET /v1/responses/ID finds nothing, previous_response_id is refused",
    )
    store.add_argument(
        "--response-store",
        type=Path,
        default=None,
        metavar="PATH",
        help="the SQLite file of stored responses (default: responses.sqlite3 in the per-user data folder)",
    )
    store.add_argument(
        "--response-store-max",
        type=_store_count_arg,
        default=1000,
        metavar="N",
        help="stored responses kept; the oldest are removed first (default: 1000)",
    )
    store.add_argument(
        "--response-store-max-age",
        type=_store_age_arg,
        default=720 * 3600.0,
        metavar="DURATION",
        help="stored responses older than this are removed: '720h', '90m', seconds (default: 720h, 30 days)",
    )


def response_store_settings(args: argparse.Namespace) -> ResponseStoreSettings:
    return ResponseStoreSettings(
        enabled=not args.no_response_store,
        path=args.response_store,
        max_responses=args.response_store_max,
        max_age_seconds=args.response_store_max_age,
    )


def _serve_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        choices=[m.value for m in ApiMode],
        default=ApiMode.BOTH.value,
        help="which API dialects to serve (default: both)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: {OPENAI_DEFAULT_PORT}, or {OLLAMA_DEFAULT_PORT} with --api ollama)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="models.yaml to serve (default: ./models.yaml, then the per-user config folder)",
    )
    parser.add_argument("--model-id", default=None, help="model to load at start-up (default: default_model)")
    parser.add_argument(
        "--keep-alive",
        type=_keep_alive_arg,
        default=300.0,
        metavar="DURATION",
        help="how long an idle model stays loaded when a request does not say (Ollama's keep_alive): "
        "'10m', '1h30m', seconds; negative keeps models until evicted (default: 5m)",
    )
    parser.add_argument(
        "--stream-interval-ms",
        type=_stream_interval_arg,
        default=5.0,
        metavar="MS",
        help="while one stream's tokens come faster than this, send them together at most this often; "
        "0 sends every token as its own chunk (default: 5)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_shutdown_timeout_arg,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may go on before their streams end with an error event "
        "(default: 5)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO)",
    )
    add_security_arguments(parser)
    _add_response_store_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heylookllm",
        description="A local LLM server speaking the OpenAI and Ollama APIs. With no command it serves.",
    )
    parser.add_argument("--version", action="version", version=f"heylookllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve the models in models.yaml (the default command)",
        description="Serve the models in models.yaml over HTTP.",
    )
    _serve_parser(serve)
    demo = sub.add_parser(
        "demo-models",
        help="write tiny demo models and a models.yaml serving them",
        description="Write tiny random-weight demo models and DIR/models.yaml serving them.",
    )
    demo.add_argument("--output", type=Path, required=True, help="folder to write into")
    from heylook_llm.importer.commands import add_import_parser, add_models_parser

    add_import_parser(sub)
    add_models_parser(sub)
    return parser


def default_port(api: ApiMode, port: int | None) -> int:
    """Ollama's own port when only the Ollama API is served, so its clients find us unchanged."""
    if port is not None:
        return port
    return OLLAMA_DEFAULT_PORT if api is ApiMode.OLLAMA else OPENAI_DEFAULT_PORT


def find_config(explicit: Path | None) -> Path | None:
    """`--config`, then ./models.yaml, then the per-user config folder; None means serve the demo models."""
    if explicit is not None:
        return explicit
    for candidate in (Path.cwd() / "models.yaml", user_config_dir() / "models.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _demo_config() -> Path:
    from heylook_llm.demo import DEMO_FORMAT_VERSION, demo_models_current, write_demo_models
    from heylook_llm.packaged_models import (
        find_packaged_models,
        missing_package_hint,
        with_mlx_folders,
        write_first_run_config,
    )

    folder = user_cache_dir() / "demo-models"
    if not demo_models_current(folder):
        write_demo_models(folder)
    packaged = with_mlx_folders(find_packaged_models(), user_cache_dir() / "packaged-mlx")
    config = write_first_run_config(folder / "models.yaml", DEMO_FORMAT_VERSION, packaged)
    log.info(
        "no models.yaml found (looked for ./models.yaml and %s): serving %sthe demo models from %s; "
        "to serve your own models write a models.yaml (see the README) and pass --config PATH",
        user_config_dir() / "models.yaml",
        "".join(
            f"{found.model.model_id} ({found.path}{', and its MLX copy' if found.mlx_path else ''}) and "
            for found in packaged
        ),
        folder,
    )
    hint = missing_package_hint()
    if hint is not None:
        log.info("%s", hint)
    return config


def _url_host(host: str) -> str:
    """A host to put in a URL: a wildcard address is reached through the loopback one; IPv6 goes in brackets."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = find_config(args.config)
    if config is None:
        config = _demo_config()
    try:
        registry: Registry = load_registry(config)
    except RegistryError as exc:
        print(f"heylookllm: {exc}", file=sys.stderr)
        return 2
    if args.model_id is not None and registry.get(args.model_id) is None:
        known = ", ".join(m.id for m in registry.enabled())
        print(
            f"heylookllm: --model-id '{args.model_id}' is not an enabled model in {config} (known: {known})",
            file=sys.stderr,
        )
        return 2
    try:
        access = access_settings(args)
    except ValueError as exc:
        print(f"heylookllm: {exc}", file=sys.stderr)
        return 2
    api = ApiMode(args.api)
    port = default_port(api, args.port)
    settings = ServerSettings(
        host=args.host,
        port=port,
        api=api,
        config_path=config,
        startup_model_id=args.model_id,
        log_level=args.log_level,
        keep_alive_seconds=args.keep_alive,
        stream_interval_seconds=args.stream_interval_ms / 1000,
        shutdown_timeout_seconds=args.shutdown_timeout,
        access=access,
        limits=request_limits(args),
        images=image_settings(args),
        responses=response_store_settings(args),
    )
    from heylook_llm.api.app import create_app
    from heylook_llm.api.serving import serve

    log.info(
        "serving %d model(s) from %s on http://%s:%d (api: %s)",
        len(registry.enabled()),
        config,
        settings.host,
        settings.port,
        api.value,
    )
    log.info("web page (chat and dashboard): http://%s:%d/ui", _url_host(settings.host), settings.port)
    # 3: uvicorn's own exit status when the server cannot start (the port is taken, ...).
    return 0 if serve(create_app(settings, registry), settings, args.log_level.lower()) else 3


def _demo_models(args: argparse.Namespace) -> int:
    from heylook_llm.demo import write_demo_models

    print(write_demo_models(args.output))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `heylookllm --port 9000` means `heylookllm serve --port 9000`: serving is the default command.
    if not args_list or (args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help", "--version")):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    if args.command == "demo-models":
        return _demo_models(args)
    if args.command in ("import", "models"):
        from heylook_llm.importer.commands import run_import, run_models

        return run_import(args) if args.command == "import" else run_models(args, find_config)
    return _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
