"""The cost of heylookllm as a front door: the same streamed requests sent straight to an upstream server and
through a heylookllm that forwards them to it (`provider: openai_compatible`), at 1 and 8 clients.

    .venv/bin/python -m benchmarks.proxy [--model tiny|50m] [--upstream heylookllm|llama_cpp.server]
                                         [--rounds 4] [--max-tokens 128] [--repeats 3]

Targets (issue 20): streaming tok/s (tokens after the first over the time after it) through the proxy within 5%
of direct, and time to first token at most 3 ms more. Both runs of a pair use the same prompts' shape with fresh
numbers (no prefix-cache hit either way); direct and proxied runs alternate, `--repeats` times, and the medians are
compared, so a burst of other work on the machine lands on both sides. The upstream is a heylookllm process serving
the benchmark model's GGUF file (llama.cpp), or llama-cpp-python's server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.clients import RequestOptions, run_level, warm_up
from benchmarks.models import RECIPES, ensure_model
from benchmarks.servers import (
    HEYLOOK_GGUF_ID,
    ServerSpec,
    heylook_config,
    heylook_spec,
    llama_cpp_server_spec,
    running_server,
)

RESULTS = Path(__file__).resolve().parent / "results"
PROXIED_ID = "proxied"
TARGET_TPS_LOSS = 0.05
TARGET_TTFT_ADDED_S = 0.003


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


async def one_level(base: str, options: RequestOptions, clients: int, rounds: int, first: int) -> dict[str, Any]:
    result = await run_level(base, options, clients, rounds, first_prompt=first)
    level = result.to_json()
    # Streaming speed: tokens after the first over the time after the first (TTFT is reported on its own).
    decode = [
        (r.completion_tokens - 1) / (r.total_s - r.ttft_s)
        for r in result.requests
        if r.ok and r.ttft_s is not None and r.total_s > r.ttft_s and r.completion_tokens > 1
    ]
    return {
        "decode_tps": statistics.median(decode) if decode else None,
        "request_tps": level["median_request_tokens_per_second"],
        "total_tps": level["total_tokens_per_second"],
        "ttft_s": level["median_ttft_s"],
        "failures": level["failures"],
        "errors": level["errors"],
    }


async def compare(
    direct: str, proxied: str, upstream_model: str, args: argparse.Namespace, eos: list[int]
) -> dict[str, Any]:
    bias = {str(t): -100.0 for t in eos}
    direct_options = RequestOptions(upstream_model, args.max_tokens, bias)
    proxy_options = RequestOptions(PROXIED_ID, args.max_tokens, bias)
    await warm_up(direct, direct_options)
    await warm_up(proxied, proxy_options)
    report: dict[str, Any] = {}
    first = 0
    for clients in (1, 8):
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
        for _ in range(args.repeats):
            for side, base, options in (("direct", direct, direct_options), ("proxy", proxied, proxy_options)):
                runs[side].append(await one_level(base, options, clients, args.rounds, first))
                first += clients * args.rounds
        row: dict[str, Any] = {"runs": runs}
        for side in ("direct", "proxy"):
            ok = [r for r in runs[side] if r["decode_tps"] is not None and r["ttft_s"] is not None]
            row[side] = {
                key: statistics.median(r[key] for r in ok) if ok else None
                for key in ("decode_tps", "request_tps", "total_tps", "ttft_s")
            }
            row[side]["failures"] = sum(r["failures"] for r in runs[side])
        d, p = row["direct"], row["proxy"]
        if d["decode_tps"] and p["decode_tps"]:
            row["tps_loss"] = 1.0 - p["decode_tps"] / d["decode_tps"]
            row["ttft_added_s"] = p["ttft_s"] - d["ttft_s"]
            row["tps_ok"] = row["tps_loss"] <= TARGET_TPS_LOSS
            row["ttft_ok"] = row["ttft_added_s"] <= TARGET_TTFT_ADDED_S
        report[f"{clients}c"] = row
        print(
            f"{clients} client(s): direct {d['decode_tps']:.0f} tok/s ({d['request_tps']:.0f} end to end), "
            f"TTFT {d['ttft_s'] * 1000:.1f} ms | proxy {p['decode_tps']:.0f} tok/s "
            f"({p['request_tps']:.0f} end to end), TTFT {p['ttft_s'] * 1000:.1f} ms | "
            f"tok/s loss {row.get('tps_loss', float('nan')) * 100:.1f}% "
            f"({'pass' if row.get('tps_ok') else 'MISS'}), TTFT added "
            f"{row.get('ttft_added_s', float('nan')) * 1000:.2f} ms ({'pass' if row.get('ttft_ok') else 'MISS'})",
            flush=True,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="tiny")
    parser.add_argument("--upstream", choices=("heylookllm", "llama_cpp.server"), default="heylookllm")
    parser.add_argument("--rounds", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="direct/proxy pairs per level (medians compared)")
    args = parser.parse_args()
    model = ensure_model(RECIPES[args.model], RESULTS / "models")
    if args.upstream == "heylookllm":
        config = heylook_config(model, RESULTS / "configs", prefix_cache=True, parallel=8, threads=1, batch_threads=2)
        upstream_spec: ServerSpec = heylook_spec(config, HEYLOOK_GGUF_ID, "upstream-heylookllm")
    else:
        upstream_spec = llama_cpp_server_spec(model, threads=1, batch_threads=2)
    logs = RESULTS / "logs"
    with running_server(upstream_spec, logs / "proxy-upstream.log") as upstream:
        front = heylook_spec(
            proxy_config(upstream.base_url, upstream_spec.request_model, RESULTS / "configs"), PROXIED_ID, "proxy"
        )
        with running_server(front, logs / "proxy-front.log") as proxy:
            report = asyncio.run(
                compare(upstream.base_url, proxy.base_url, upstream_spec.request_model, args, list(model.eos_ids))
            )
    report["settings"] = {**vars(args), "model_path": str(model.gguf_path)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy-{args.model}-{args.upstream}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
