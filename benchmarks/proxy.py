"""The cost of heylookllm as a front door: the same streamed requests sent straight to an upstream server and
through a heylookllm that forwards them to it (`provider: openai_compatible`), at 1 and 8 clients, then a run of
sequential one-token requests for the time to first token each request adds.

    .venv/bin/python -m benchmarks.proxy [--model tiny|50m] [--upstream llama-server|heylookllm|llama_cpp.server]
                                         [--pin | --no-pin] [--rounds 4] [--max-tokens 128] [--repeats 3]
                                         [--sequential 100]

Targets (issue 20): streaming tok/s (tokens after the first over the time after it) through the proxy within 5%
of direct, and time to first token at most 3 ms more. Both runs of a pair use the same prompts' shape with fresh
numbers (no prefix-cache hit either way); direct and proxied runs alternate, `--repeats` times, and the medians are
compared, so a burst of other work on the machine lands on both sides. The sequential run alternates one-token
requests (each with a prompt of its own) and reports the median and best time to first token each way. Every proxied
run also reports the proxy process's own CPU time (its threads' scheduler time, /proc/PID/task/*/schedstat) per
streamed token and per one-token request: a measure of its cost that other work on the machine disturbs less than
it disturbs timings.

The upstream is llama.cpp's own C++ server (`llama-server`, built by benchmarks/build_llama_server.py), a
heylookllm process serving the benchmark model's GGUF file, or llama-cpp-python's server.

`--pin` (on by default where this process may use two cores or more) puts the upstream on its own core(s) and the
proxy and this benchmark client on the others, in both the direct and the proxied runs, so that the only
difference between them is the proxy. The upstream stands in for another machine (vLLM on a GPU box, Ollama on a
Mac): in a deployment the proxy never competes with the model for CPU, and without pinning, on a small machine,
the figure measures that competition instead of the proxy. Pinned, the upstream's llama.cpp uses one thread per
upstream core. The client here reads the streams with as little work as it can (raw bytes split into events, one
JSON parse each), since it shares the proxy's core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.clients import CHAT_PATH, RequestOptions, RequestResult, chat_body, user_prompt
from benchmarks.models import RECIPES, ensure_model
from benchmarks.servers import (
    HEYLOOK_GGUF_ID,
    ServerSpec,
    heylook_config,
    heylook_spec,
    llama_cpp_server_spec,
    llama_server_spec,
    running_server,
)

RESULTS = Path(__file__).resolve().parent / "results"
PROXIED_ID = "proxied"
TARGET_TPS_LOSS = 0.05
TARGET_TTFT_ADDED_S = 0.003
UPSTREAMS = ("llama-server", "heylookllm", "llama_cpp.server")
SLOTS = 8


def proxy_config(upstream_base: str, upstream_model: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models-proxy.yaml"
    path.write_text(
        "# Written by benchmarks/proxy.py: one model, served by the upstream under test.\n"
        "models:\n"
        f"  - id: {PROXIED_ID}\n"
        "    provider: openai_compatible\n"
        "    config:\n"
        f"      base_url: {upstream_base}/v1\n"
        f"      model: {upstream_model}\n",
        encoding="utf-8",
    )
    return path


# --- pinning -------------------------------------------------------------------------------------------------
def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def split_cores(cores: list[int]) -> tuple[set[int], set[int]]:
    """(upstream's cores, proxy's and client's cores): the first half (at least one) for the upstream."""
    half = max(1, len(cores) // 2)
    return set(cores[:half]), set(cores[half:])


@contextlib.contextmanager
def affinity(cores: set[int] | None) -> Iterator[None]:
    """Run the block (and every process it starts, which inherits the mask) on `cores`; None changes nothing."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds a process's threads have run so far (the scheduler's nanosecond count); 0 without /proc."""
    if pid is None:
        return 0.0
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


# --- the client ----------------------------------------------------------------------------------------------
async def stream_lean(client: httpx.AsyncClient, body: dict[str, Any]) -> RequestResult:
    """One streaming chat completion, timed like `benchmarks.clients.stream_chat` (TTFT at the first content, tokens
    from usage) but read as raw bytes split into events by hand: httpx's text and line decoders cost more than the
    event's JSON parse, and this client shares its core with the proxy under test."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start)
    pending = b""
    try:
        async with client.stream("POST", CHAT_PATH, json=body) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode("utf-8", "replace")[:300]
                result.error = f"HTTP {response.status_code}: {detail}"
            else:
                async for data in response.aiter_raw():
                    pending += data
                    if b"\n" not in data:
                        continue
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                            continue
                        event = orjson.loads(line[5:])
                        if "error" in event:
                            result.error = f"stream error: {str(event['error'])[:300]}"
                            continue
                        for choice in event.get("choices") or ():
                            result.finish_reason = choice.get("finish_reason") or result.finish_reason
                            if (choice.get("delta") or {}).get("content"):
                                if result.ttft_s is None:
                                    result.ttft_s = time.perf_counter() - start
                                result.content_chunks += 1
                        usage = event.get("usage")
                        if usage:
                            result.completion_tokens = int(usage.get("completion_tokens") or 0)
                            result.tokens_from_usage = True
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.total_s = time.perf_counter() - start
    if not result.tokens_from_usage:
        at_limit = result.finish_reason == "length" and result.content_chunks > 0
        result.completion_tokens = int(body["max_tokens"]) if at_limit else result.content_chunks
    result.ok = not result.error and result.completion_tokens > 0
    if not result.ok and not result.error:
        result.error = "the stream carried no tokens"
    return result


def new_client(base: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base, timeout=600.0, limits=limits, trust_env=False)


def request(options: RequestOptions, prompt: int) -> dict[str, Any]:
    return chat_body([{"role": "user", "content": user_prompt(prompt)}], options)


async def one_level(
    client: httpx.AsyncClient, options: RequestOptions, clients: int, rounds: int, first: int, pid: int | None
) -> dict[str, Any]:
    """One level; `pid` is the proxy's process when it is the proxy's run (its CPU time per token is reported)."""

    async def one_client(number: int) -> list[RequestResult]:
        return [await stream_lean(client, request(options, first + r * clients + number)) for r in range(rounds)]

    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    results = [r for per_client in await asyncio.gather(*map(one_client, range(clients))) for r in per_client]
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu
    ok = [r for r in results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    # Streaming speed: tokens after the first over the time after the first (TTFT is reported on its own).
    decode = [
        (r.completion_tokens - 1) / (r.total_s - r.ttft_s)
        for r in ok
        if r.ttft_s is not None and r.total_s > r.ttft_s and r.completion_tokens > 1
    ]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {
        "decode_tps": statistics.median(decode) if decode else None,
        "request_tps": statistics.median(r.tokens_per_second for r in ok) if ok else None,
        "total_tps": tokens / wall if wall > 0 else None,
        "proxy_cpu_us_per_token": cpu / tokens * 1e6 if pid is not None and tokens else None,
        "ttft_s": statistics.median(ttfts) if ttfts else None,
        "failures": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


def _ms(value: float | None) -> str:
    return f"{value * 1000:.2f} ms" if value is not None else "n/a"


async def compare(
    direct: str, proxied: str, upstream_model: str, args: argparse.Namespace, eos: list[int], proxy_pid: int
) -> dict[str, Any]:
    bias = {str(t): -100.0 for t in eos}
    options = {
        "direct": RequestOptions(upstream_model, args.max_tokens, bias),
        "proxy": RequestOptions(PROXIED_ID, args.max_tokens, bias),
    }
    report: dict[str, Any] = {}
    async with new_client(direct, SLOTS) as direct_client, new_client(proxied, SLOTS) as proxy_client:
        clients = {"direct": direct_client, "proxy": proxy_client}
        for side in ("direct", "proxy"):
            # Warm up, and open every connection a level uses, so that no level pays for connecting.
            await asyncio.gather(
                *(stream_lean(clients[side], request(options[side], 90_000 + n)) for n in range(SLOTS))
            )
        first = 0
        for level in (1, 8):
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
            for _ in range(args.repeats):
                for side in ("direct", "proxy"):
                    pid = proxy_pid if side == "proxy" else None
                    runs[side].append(await one_level(clients[side], options[side], level, args.rounds, first, pid))
                    first += level * args.rounds
            report[f"{level}c"] = _row(runs, level)
        if args.sequential:
            report["sequential"] = await sequential(clients, options, args.sequential, first, proxy_pid)
    return report


def _row(runs: dict[str, list[dict[str, Any]]], level: int) -> dict[str, Any]:
    row: dict[str, Any] = {"runs": runs}
    for side in ("direct", "proxy"):
        ok = [r for r in runs[side] if r["decode_tps"] is not None and r["ttft_s"] is not None]
        row[side] = {
            key: statistics.median(r[key] for r in ok) if ok else None
            for key in ("decode_tps", "request_tps", "total_tps", "ttft_s")
        }
        cpu = [r["proxy_cpu_us_per_token"] for r in ok if r.get("proxy_cpu_us_per_token") is not None]
        row[side]["proxy_cpu_us_per_token"] = statistics.median(cpu) if cpu else None
        row[side]["failures"] = sum(r["failures"] for r in runs[side])
    d, p = row["direct"], row["proxy"]
    if d["decode_tps"] and p["decode_tps"]:
        row["tps_loss"] = 1.0 - p["decode_tps"] / d["decode_tps"]
        row["ttft_added_s"] = p["ttft_s"] - d["ttft_s"]
        row["tps_ok"] = row["tps_loss"] <= TARGET_TPS_LOSS
        row["ttft_ok"] = row["ttft_added_s"] <= TARGET_TTFT_ADDED_S
        print(
            f"{level} client(s): direct {d['decode_tps']:.0f} tok/s ({d['total_tps']:.0f} total), "
            f"TTFT {_ms(d['ttft_s'])} | proxy {p['decode_tps']:.0f} tok/s ({p['total_tps']:.0f} total), "
            f"TTFT {_ms(p['ttft_s'])} | tok/s loss {row['tps_loss'] * 100:.1f}% "
            f"({'pass' if row['tps_ok'] else 'MISS'}), TTFT added {_ms(row['ttft_added_s'])} "
            f"({'pass' if row['ttft_ok'] else 'MISS'}); failures {d['failures']} / {p['failures']}; proxy CPU "
            f"{p['proxy_cpu_us_per_token'] or 0:.0f} us/token",
            flush=True,
        )
    else:
        print(f"{level} client(s): no figure (failures {d['failures']} / {p['failures']})", flush=True)
    return row


async def sequential(
    clients: dict[str, httpx.AsyncClient],
    options: dict[str, RequestOptions],
    count: int,
    first: int,
    proxy_pid: int,
) -> dict[str, Any]:
    """`count` one-token requests each way, one at a time, alternating: the time to first token a request adds,
    and the proxy's CPU time per request (measured around its own requests only)."""
    ttft: dict[str, list[float]] = {"direct": [], "proxy": []}
    failures = 0
    proxy_cpu = 0.0
    for n in range(count):
        for number, side in enumerate(("direct", "proxy")):
            one = RequestOptions(options[side].model, 1, options[side].logit_bias)
            before = cpu_seconds(proxy_pid) if side == "proxy" else 0.0
            # A prompt of its own each way: the second of a pair would find the first's in the upstream's cache.
            result = await stream_lean(clients[side], request(one, first + 2 * n + number))
            if side == "proxy":
                proxy_cpu += cpu_seconds(proxy_pid) - before
            if result.ok and result.ttft_s is not None:
                ttft[side].append(result.ttft_s)
            else:
                failures += 1
    out: dict[str, Any] = {"requests": count, "failures": failures, "proxy_cpu_ms_per_request": proxy_cpu / count * 1e3}
    for side in ("direct", "proxy"):
        out[side] = {"median_s": statistics.median(ttft[side]), "best_s": min(ttft[side])} if ttft[side] else None
    if out["direct"] and out["proxy"]:
        out["median_added_s"] = out["proxy"]["median_s"] - out["direct"]["median_s"]
        out["best_added_s"] = out["proxy"]["best_s"] - out["direct"]["best_s"]
        out["median_ok"] = out["median_added_s"] <= TARGET_TTFT_ADDED_S
        print(
            f"sequential max_tokens=1, {count} each way: direct TTFT median {_ms(out['direct']['median_s'])} best "
            f"{_ms(out['direct']['best_s'])} | proxy median {_ms(out['proxy']['median_s'])} best "
            f"{_ms(out['proxy']['best_s'])} | added median {_ms(out['median_added_s'])} "
            f"({'pass' if out['median_ok'] else 'MISS'}), best {_ms(out['best_added_s'])}; failures {failures}; "
            f"proxy CPU {out['proxy_cpu_ms_per_request']:.2f} ms/request",
            flush=True,
        )
    return out


def upstream_spec(args: argparse.Namespace, model: Any, threads: int, batch_threads: int) -> ServerSpec:
    if args.upstream == "heylookllm":
        config = heylook_config(
            model, RESULTS / "configs", prefix_cache=True, parallel=SLOTS, threads=threads, batch_threads=batch_threads
        )
        return heylook_spec(config, HEYLOOK_GGUF_ID, "upstream-heylookllm")
    if args.upstream == "llama-server":
        return llama_server_spec(model, threads=threads, batch_threads=batch_threads, parallel=SLOTS)
    return llama_cpp_server_spec(model, threads=threads, batch_threads=batch_threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="tiny")
    parser.add_argument("--upstream", choices=UPSTREAMS, default="heylookllm")
    cores = usable_cores()
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(cores) >= 2,
        help="upstream on its own core(s), proxy and client on the others (default: on with 2 cores or more)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="direct/proxy pairs per level (medians compared)")
    parser.add_argument("--sequential", type=int, default=100, help="one-token requests each way (0: none)")
    args = parser.parse_args()
    if args.pin and len(cores) < 2:
        parser.error("--pin needs at least two usable cores")
    upstream_cores, front_cores = split_cores(cores) if args.pin else (None, None)
    model = ensure_model(RECIPES[args.model], RESULTS / "models")
    # Pinned: one llama.cpp thread per upstream core. Unpinned: the earlier runs' settings (1 thread for one-token
    # steps, 2 for batches).
    threads = len(upstream_cores) if upstream_cores else 1
    spec = upstream_spec(args, model, threads, threads if upstream_cores else 2)
    logs = RESULTS / "logs"
    with contextlib.ExitStack() as stack:
        with affinity(upstream_cores):
            upstream = stack.enter_context(running_server(spec, logs / "proxy-upstream.log"))
        with affinity(front_cores):
            front = heylook_spec(
                proxy_config(upstream.base_url, spec.request_model, RESULTS / "configs"), PROXIED_ID, "proxy"
            )
            proxy = stack.enter_context(running_server(front, logs / "proxy-front.log"))
            print(
                f"upstream {args.upstream} (pid {upstream.process.pid}) on cores "
                f"{sorted(upstream_cores) if upstream_cores else 'any'}; proxy (pid {proxy.process.pid}) and client "
                f"on {sorted(front_cores) if front_cores else 'any'}",
                flush=True,
            )
            report = asyncio.run(
                compare(
                    upstream.base_url, proxy.base_url, spec.request_model, args, list(model.eos_ids), proxy.process.pid
                )
            )
    report["settings"] = {
        **vars(args),
        "model_path": str(model.gguf_path),
        "upstream_cores": sorted(upstream_cores) if upstream_cores else None,
        "front_cores": sorted(front_cores) if front_cores else None,
        "load_average": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy-{args.model}-{args.upstream}{'-pinned' if args.pin else ''}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
