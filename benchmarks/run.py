"""Benchmark heylookllm against llama_cpp.server, mlx_lm.server and the in-process baselines.

    .venv/bin/python benchmarks/build_llama_server.py   # once: llama.cpp's own server, the headline peer
    .venv/bin/python benchmarks/run.py            # the full run (tiny, ~50M and SmolLM2-135M models)
    .venv/bin/python benchmarks/run.py --quick    # smoke run: tiny model, fewer tokens and requests
    .venv/bin/python benchmarks/run.py --only 50m gguf          # a subset: models, formats, runners
    .venv/bin/python benchmarks/run.py --report benchmarks/results/benchmark.json   # reprint a saved run

Writes benchmarks/results/benchmark.json (every figure), benchmark.png (chart), runs/<time>.json (a copy),
logs/ (one log per server and in-process baseline) and prints the figures and ratio tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make `benchmarks` importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.models import EXTERNAL_GGUF, RECIPES, BenchModel, ensure_model, external_model
from benchmarks.servers import DEFAULT_BATCH_THREADS, DEFAULT_THREADS, heylook_has_batch_threads
from benchmarks.suite import (
    FORMATS,
    FULL_PLAN,
    MODEL_NAMES,
    QUICK_PLAN,
    REPO_ROOT,
    RUNNERS,
    Plan,
    RunContext,
    plan_groups,
    run_groups,
)

DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("heylookllm", "llama_cpp_python", "mlx", "mlx-lm", "httpx", "uvicorn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        out["git"] = head + (" (src/ has uncommitted changes)" if dirty else "")
    except OSError:
        out["git"] = "unknown"
    return out


def print_report(record: dict[str, Any]) -> None:
    runs = record.get("runs", [])
    models = [m for m in MODEL_NAMES if any(r["model"] == m for r in runs)]
    levels = list(record["plan"]["levels"])
    plan = record["plan"]
    print()
    print(
        f"heylookllm benchmark {record['started_at']}  ({record['machine']['cpus']} CPUs, {record['versions']['git']})"
    )
    print(
        f"greedy chat completions, streamed, {plan['max_tokens']} generated tokens, EOS banned with logit_bias;"
        f" turn-5 chat: {plan['system_tokens']}-token system prompt, {plan['turn_max_tokens']} tokens a turn"
    )
    print(
        f"llama.cpp threads {plan['threads']} (prompts and batches {plan['batch_threads']}),"
        f" heylookllm parallel {plan['parallel']}"
    )
    print()
    print(report.figures_table(runs, levels))
    print()
    print(report.llama_server_table(runs, models, levels))
    print()
    print(report.checks_table(report.checks(runs, models, top=_top_level(levels))))
    failed = [r for r in runs if r["status"] != "ok"]
    for run in failed:
        print(f"\n{run['model']}/{run['format']}/{run['runner']} failed: {run.get('error')}")
    notes = record.get("notes") or []
    if notes:
        print()
        for note in notes:
            print(f"note: {note}")


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C does, through every `finally`, so that no server is left running."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    _stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer tokens and requests")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help=f"run a subset; names: {', '.join(MODEL_NAMES)}, {', '.join(FORMATS)}, {', '.join(RUNNERS)}",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="output folder (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=None, help="heylookllm's parallel slots (default: 8)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"llama.cpp threads for every GGUF runner (default: half the cores, here {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--batch-threads",
        type=int,
        default=None,
        help=f"llama.cpp threads for prompts and batches (default: all cores, here {DEFAULT_BATCH_THREADS})",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="before each model/format group, wait up to this long for other programs to go idle (default: 20)",
    )
    parser.add_argument(
        "--levels",
        default=None,
        metavar="N,N,...",
        help="concurrency levels to measure, e.g. 1,8,16 (default: 1,2,4,8,16; waves per level as in the full plan)",
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="generated tokens a request (default 128)")
    parser.add_argument(
        "--waves", type=int, default=None, help="waves per concurrency level (default: 10, 4, 3, 5, 3 for 1-16 clients)"
    )
    parser.add_argument("--no-chat", action="store_true", help="skip the 5-turn chat (and the nocache server)")
    parser.add_argument("--report", type=Path, default=None, metavar="JSON", help="print a saved run and exit")
    args = parser.parse_args(argv)

    if args.report is not None:
        print_report(json.loads(args.report.read_text()))
        return 0
    known = {*MODEL_NAMES, *FORMATS, *RUNNERS}
    unknown = [t for t in args.only if t not in known]
    if unknown:
        parser.error(f"unknown --only name(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.parallel is not None:
        plan = dataclasses.replace(plan, parallel=args.parallel)
    if args.threads is not None:
        plan = dataclasses.replace(plan, threads=args.threads)
    if args.batch_threads is not None:
        plan = dataclasses.replace(plan, batch_threads=args.batch_threads)
    if args.levels is not None:
        levels = tuple(int(n) for n in args.levels.split(","))
        waves = tuple(plan.waves[plan.levels.index(n)] if n in plan.levels else 3 for n in levels)
        plan = dataclasses.replace(plan, levels=levels, waves=waves)
    if args.max_tokens is not None:
        plan = dataclasses.replace(plan, max_tokens=args.max_tokens)
    if args.waves is not None:
        plan = dataclasses.replace(plan, waves=tuple(args.waves for _ in plan.levels))
    if args.no_chat:
        plan = dataclasses.replace(plan, conversations=0)
    model_names = ["tiny"] if args.quick else list(MODEL_NAMES)
    model_names = [m for m in model_names if not (set(MODEL_NAMES) & set(args.only)) or m in args.only]

    results: Path = args.results
    for sub in ("logs", "configs", "runs", "models"):
        (results / sub).mkdir(parents=True, exist_ok=True)
    for old_log in (results / "logs").glob("*.log"):
        old_log.unlink()  # logs/ holds the last run's logs only
    started_at = datetime.datetime.now().isoformat(timespec="seconds")
    record: dict[str, Any] = {
        "started_at": started_at,
        "quick": args.quick,
        "only": args.only,
        "plan": _plan_json(plan),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_start": list(os.getloadavg())},
        "versions": _versions(),
        "models": {},
        "notes": [],
        "runs": [],
    }
    stamp = started_at.replace(":", "").replace("-", "")
    json_path = results / "benchmark.json"
    copy_path = results / "runs" / f"{stamp}.json"

    def save() -> None:
        text = json.dumps(record, indent=1)
        json_path.write_text(text)
        copy_path.write_text(text)

    ctx = RunContext(results, results / "logs", results / "configs", record, save, quiet_wait_s=args.quiet_wait)
    ctx.progress(f"generating or reusing models: {', '.join(model_names)}")
    models = [_model(name, results) for name in model_names]
    record["models"] = {m.name: m.to_json() for m in models}
    # MLX's CPU backend multiplies matrices far slower than llama.cpp here; the ~50M model gets a lighter plan.
    if not heylook_has_batch_threads():
        record["notes"].append(
            f"heylookllm's models.yaml has no n_threads_batch: its prompts and batches run on {plan.threads} "
            f"thread(s), where llama_cpp.server and in-process llama-cpp-python use {plan.batch_threads}."
        )
    light = {"50m"} if "50m" in model_names else set()
    if light:
        record["notes"].append(
            f"MLX on the ~50M model runs a lighter plan ({plan.lighter().max_tokens} generated tokens, one wave per "
            "level, no 5-turn chat): MLX's CPU matrix products are slow on this machine (a 1,000-token prompt "
            "takes most of a minute)."
        )
    groups = plan_groups(models, plan, args.only, light)
    begun = time.perf_counter()
    try:
        run_groups(groups, ctx)
    except BaseException as exc:
        record["interrupted"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        record["seconds"] = time.perf_counter() - begun
        save()
    chart_path = results / "benchmark.png"
    try:
        report.write_chart(record["runs"], [m.name for m in models], list(plan.levels), chart_path)
        record["chart"] = str(chart_path)
    except Exception as exc:  # the chart is a convenience; the table and JSON already hold every figure
        record["notes"].append(f"chart not written: {type(exc).__name__}: {exc}")
    checks = report.checks(record["runs"], [m.name for m in models], top=_top_level(list(plan.levels)))
    record["checks"] = [c.to_json() for c in checks]
    save()
    print_report(record)
    print(f"\nresults: {json_path}\nchart:   {chart_path}\nlogs:    {results / 'logs'}")
    print(f"whole run: {record['seconds']:.0f}s")
    return 0


def _top_level(levels: list[int]) -> int:
    """The level the Python peers' multi-client targets are set at: 8 clients when measured."""
    return 8 if 8 in levels else max(levels)


def _model(name: str, results: Path) -> BenchModel:
    if name in EXTERNAL_GGUF:
        return external_model(name)
    return ensure_model(RECIPES[name], results / "models")


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(plan).items()}


if __name__ == "__main__":
    raise SystemExit(main())
