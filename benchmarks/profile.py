"""Where a server's CPU time goes under concurrent streaming load: per thread, and (optionally) per Python frame.

    .venv/bin/python -m benchmarks.profile --model 50m --clients 8 --waves 4
    .venv/bin/python -m benchmarks.profile --model smollm2 --clients 8 --runner llama-server
    .venv/bin/python -m benchmarks.profile --model 50m --clients 8 --py-spy   # also a py-spy profile (raw text)

Starts one server (heylookllm with the benchmark's generated models.yaml, or llama-server), sends `--waves` waves
of `--clients` streamed requests (the benchmark's requests: 128 tokens, EOS banned), and reads each of the
server's threads' CPU time from /proc before and after. Prints the wall time, total tok/s and, per thread name,
CPU seconds and the share of the wall time it kept a core busy; writes the figures to
benchmarks/results/profile-<model>-<runner>-<clients>.json. With `--py-spy`, py-spy samples the server's Python
threads during the waves (`--gil`: only samples holding the GIL) into a `.txt` file of collapsed stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.clients import RequestOptions, new_client, open_connections, run_level, warm_up
from benchmarks.models import EXTERNAL_GGUF, RECIPES, BenchModel, ensure_model, external_model
from benchmarks.servers import (
    DEFAULT_BATCH_THREADS,
    DEFAULT_THREADS,
    HEYLOOK_GGUF_ID,
    heylook_config,
    heylook_spec,
    llama_server_spec,
    running_server,
)
from benchmarks.suite import ban_list

RESULTS = Path(__file__).resolve().parent / "results"

# Run in the heylookllm server process before its own code (--decode-timing): times every llama_decode call as
# Python sees it (until the calling thread holds the GIL again), and a probe thread measures how late a 1 ms sleep
# gets the GIL back (the wait any thread has for the GIL). Both go to a JSON file when the model unloads.
DECODE_TIMING = """
import json, os, threading, time, llama_cpp
_out = os.environ["BENCH_DECODE_TIMING"]
_decode, _free = llama_cpp.llama_decode, llama_cpp.llama_free
_wall = {"calls": 0, "seconds": 0.0, "tokens": 0, "probe_wakeups": 0, "probe_late_seconds": 0.0, "probe_late": []}
def _timed_decode(ctx, batch):
    started = time.perf_counter()
    status = _decode(ctx, batch)
    _wall["seconds"] += time.perf_counter() - started
    _wall["calls"] += 1
    _wall["tokens"] += batch.n_tokens
    return status
def _probe():
    while True:
        started = time.perf_counter()
        time.sleep(0.001)
        late = time.perf_counter() - started - 0.001
        _wall["probe_wakeups"] += 1
        _wall["probe_late_seconds"] += late
        if len(_wall["probe_late"]) < 200000:
            _wall["probe_late"].append(late)
def _free_after_report(ctx):
    with open(_out, "a") as f:
        f.write(json.dumps(_wall) + "\\n")
    return _free(ctx)
llama_cpp.llama_decode, llama_cpp.llama_free = _timed_decode, _free_after_report
threading.Thread(target=_probe, daemon=True).start()
"""
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, CPU seconds so far) for every thread of `pid`."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def cpu_by_thread(
    pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per thread between two readings; Python 3.11 does not name its threads in the kernel, so the
    process's first thread (the event loop for both servers) is called `main` and the others by their id."""
    totals: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        label = f"{name} main" if tid == pid else f"{name} {tid}"
        totals[label] = totals.get(label, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _model(name: str) -> BenchModel:
    return external_model(name) if name in EXTERNAL_GGUF else ensure_model(RECIPES[name], RESULTS / "models")


async def _waves(base_url: str, options: RequestOptions, clients: int, waves: int) -> list[dict[str, Any]]:
    out = []
    async with new_client(base_url, options, clients) as pool:
        await open_connections(pool, clients)
        for wave in range(waves):
            level = await run_level(base_url, options, clients, 1, 50_000 + wave * clients, pool)
            out.append(level.to_json())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="50m", choices=[*RECIPES, *EXTERNAL_GGUF])
    parser.add_argument("--runner", default="heylookllm", choices=["heylookllm", "llama-server"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--batch-threads", type=int, default=DEFAULT_BATCH_THREADS)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--py-spy", action="store_true", help="also record a py-spy profile (heylookllm only)")
    parser.add_argument("--gil", action="store_true", help="py-spy: only samples that hold the GIL")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="heylookllm: run with sys.setswitchinterval(SECONDS) (Python's default is 0.005)",
    )
    parser.add_argument(
        "--decode-timing",
        action="store_true",
        help="heylookllm: compare llama_decode's time seen from Python with llama.cpp's own timer (GIL waits)",
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], metavar="ARG", help="an extra server argument (repeatable)"
    )
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server environment")
    args = parser.parse_args(argv)

    model = _model(args.model)
    if args.runner == "heylookllm":
        config = heylook_config(
            model,
            RESULTS / "configs",
            prefix_cache=True,
            parallel=args.parallel,
            threads=args.threads,
            batch_threads=args.batch_threads,
        )
        spec = heylook_spec(config, HEYLOOK_GGUF_ID, "heylookllm")
        if args.switch_interval is not None or args.decode_timing:
            prelude = "import runpy, sys\n"
            if args.switch_interval is not None:
                prelude += f"sys.setswitchinterval({args.switch_interval})\n"
            if args.decode_timing:
                prelude += DECODE_TIMING
            prelude += (
                "sys.argv[0] = 'heylook_llm'\nrunpy.run_module('heylook_llm', run_name='__main__', alter_sys=True)\n"
            )
            spec = dataclasses.replace(spec, command=[sys.executable, "-c", prelude, *spec.command[3:]])
    else:
        spec = llama_server_spec(model, args.threads, args.batch_threads, args.parallel)
    if args.server_arg:
        spec = dataclasses.replace(spec, command=[*spec.command, *args.server_arg])
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    options = RequestOptions(spec.request_model, args.max_tokens, ban_list(model))
    stem = f"profile-{args.model}-{args.runner}-{args.clients}"
    log_path = RESULTS / "logs" / f"{stem}.log"
    timing_path = RESULTS / f"{stem}-decode.jsonl"
    timing_path.unlink(missing_ok=True)
    os.environ["BENCH_DECODE_TIMING"] = str(timing_path)
    with running_server(spec, log_path) as server:
        warm = asyncio.run(warm_up(server.base_url, options))
        if not warm.ok:
            raise SystemExit(f"warm-up failed: {warm.error}")
        pid = server.process.pid
        spy: subprocess.Popen[bytes] | None = None
        spy_path = RESULTS / f"{stem}.txt"
        if args.py_spy:
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "--format", "raw"]
            command += ["--threads", "--rate", "500", "-o", str(spy_path), "--nonblocking"]
            command += ["--gil"] if args.gil else []
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        before = thread_cpu(pid)
        started = time.perf_counter()
        waves = asyncio.run(_waves(server.base_url, options, args.clients, args.waves))
        wall = time.perf_counter() - started
        after = thread_cpu(pid)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=30)
    tokens = sum(w["total_tokens"] for w in waves)
    decode_timing = None
    if args.decode_timing and timing_path.is_file():
        # Whole server life (warm-up included); the waves dominate it.
        decode_timing = json.loads(timing_path.read_text().splitlines()[-1])
        late = sorted(decode_timing.pop("probe_late"))
        if late:
            decode_timing["probe_late_p50_s"] = late[len(late) // 2]
            decode_timing["probe_late_p99_s"] = late[int(len(late) * 0.99)]
    per_thread = cpu_by_thread(pid, before, after)
    result = {
        "model": args.model,
        "runner": args.runner,
        "clients": args.clients,
        "threads": args.threads,
        "batch_threads": args.batch_threads,
        "env": args.env,
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_second": tokens / wall,
        "wave_tokens_per_second": [w["total_tokens_per_second"] for w in waves],
        "thread_cpu_s": per_thread,
        "server_cpu_s": sum(per_thread.values()),
        "decode_timing": decode_timing,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.runner} {args.model} {args.clients} clients, threads {args.threads}/{args.batch_threads}")
    print(
        f"  {tokens} tokens in {wall:.2f}s: {tokens / wall:.0f} tok/s (waves: "
        + ", ".join(f"{w:.0f}" for w in result["wave_tokens_per_second"])
        + ")"
    )
    print(
        f"  server CPU {result['server_cpu_s']:.2f}s = {result['server_cpu_s'] / wall:.2f} cores;"
        f" {1e6 * result['server_cpu_s'] / max(tokens, 1):.0f} us/token"
    )
    for name, seconds in per_thread.items():
        if seconds > 0.005:
            print(f"    {name:<24} {seconds:7.2f}s  {seconds / wall:5.2f} cores")
    if decode_timing is not None:
        calls = max(decode_timing["calls"], 1)
        wakeups = max(decode_timing["probe_wakeups"], 1)
        print(
            f"  llama_decode seen from Python: {calls} calls, {decode_timing['tokens'] / calls:.1f} tokens a call,"
            f" {1e3 * decode_timing['seconds'] / calls:.2f} ms a call"
        )
        if "probe_late_p50_s" in decode_timing:
            mean = decode_timing["probe_late_seconds"] / wakeups
            p50, p99 = decode_timing["probe_late_p50_s"], decode_timing["probe_late_p99_s"]
            print(
                f"  GIL probe (1 ms sleeps): {wakeups} wake-ups, late by {1e3 * mean:.2f} ms on average,"
                f" p50 {1e3 * p50:.2f} ms, p99 {1e3 * p99:.2f} ms"
            )
    if args.py_spy:
        print(f"  py-spy: {spy_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
