"""Soak and swap runs: heylookllm under steady load for minutes, and models swapped in and out hundreds of times.

    .venv/bin/python benchmarks/soak.py                      # both: 50 streaming clients for 300 s, then 300 swaps
    .venv/bin/python benchmarks/soak.py --duration 60 --swaps 0
    .venv/bin/python benchmarks/soak.py --duration 0 --swaps 300

Soak: `--clients` (50) concurrent clients, half OpenAI (`/v1/completions`, SSE), half Ollama (`/api/generate`,
NDJSON), each streaming one answer of `--max-tokens` after another for `--duration` seconds (greedy after a fixed
prompt: the random demo model would otherwise end most answers after a token or two); a failure is any status but 200, a
stream without its terminator (`[DONE]` / `done: true`) or an error event. Meanwhile `/health` is asked every
200 ms: its p50/p99 latency shows whether the event loop stays responsive. The server's resident memory (RSS) is
read after a warm-up minute fraction and at the end: the drift is the growth between them.

Swaps: `max_loaded_models: 1` with the GGUF and the MLX demo models; each request for one unloads the other,
through real requests. RSS after the first 10 swaps (warm: imports, allocator pools) against after the last one.

The figures are printed and written to `benchmarks/results/soak.json`. Not a test: nothing fails a build.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.servers import RunningServer, ServerSpec, running_server

RESULTS = Path(__file__).resolve().parent / "results"
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]
PROMPT = "hello"
SWAP_WARMUP = 10


@dataclass(slots=True)
class SoakFigures:
    duration_s: float
    clients: int
    requests: int = 0
    failures: int = 0
    failure_examples: list[str] = field(default_factory=list)
    tokens: int = 0
    health_probes: int = 0
    health_p50_ms: float = 0.0
    health_p99_ms: float = 0.0
    health_max_ms: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_drift_percent: float = 0.0


@dataclass(slots=True)
class SwapFigures:
    swaps: int
    failures: int = 0
    rss_after_warmup_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_drift_percent: float = 0.0
    rss_samples_mb: list[float] = field(default_factory=list)
    seconds: float = 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def write_config(folder: Path, demo: Path, *, max_loaded: int, parallel: int) -> Path:
    config = folder / "models.yaml"
    config.write_text(
        f"""max_loaded_models: {max_loaded}
models:
  - id: gguf
    provider: llama_cpp
    config: {{model_path: {demo / "demo-gguf.gguf"}, n_ctx: 1024, parallel: {parallel}}}
  - id: mlx
    provider: mlx
    config: {{model_path: {demo / "demo-mlx"}}}
"""
    )
    return config


def spec(config: Path, model_id: str) -> ServerSpec:
    command = [sys.executable, "-m", "heylook_llm", "--config", str(config), "--model-id", model_id]
    return ServerSpec("heylookllm", command, "/ready", model_id)


# --- soak ----------------------------------------------------------------------------------------------------
async def _openai_stream(client: httpx.AsyncClient, model: str, max_tokens: int) -> int:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    tokens, done = 0, False
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"openai {reply.status_code}: {(await reply.aread())[:200]!r}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"openai error event: {event['error']}")
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    if not done:
        raise RuntimeError("openai stream ended without [DONE]")
    return tokens


async def _ollama_stream(client: httpx.AsyncClient, model: str, max_tokens: int) -> int:
    body = {"model": model, "prompt": PROMPT, "raw": True, "options": {"num_predict": max_tokens, "temperature": 0}}
    async with client.stream("POST", "/api/generate", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"ollama {reply.status_code}: {(await reply.aread())[:200]!r}")
        async for line in reply.aiter_lines():
            if not line:
                continue
            piece = json.loads(line)
            if "error" in piece:
                raise RuntimeError(f"ollama error line: {piece['error']}")
            if piece.get("done"):
                return int(piece.get("eval_count", 0))
    raise RuntimeError("ollama stream ended without done: true")


async def _client_loop(
    base_url: str, index: int, model: str, max_tokens: int, deadline: float, figures: SoakFigures
) -> None:
    stream = _openai_stream if index % 2 == 0 else _ollama_stream
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        while time.monotonic() < deadline:
            try:
                # Not `figures.tokens += await ...`: that reads the total before the await and loses the others' tokens.
                tokens = await stream(client, model, max_tokens)
                figures.tokens += tokens
            except Exception as exc:
                figures.failures += 1
                if len(figures.failure_examples) < 5:
                    figures.failure_examples.append(f"{type(exc).__name__}: {exc}")
            figures.requests += 1


async def _probe_health(base_url: str, deadline: float, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            reply = await client.get("/health")
            if reply.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.2)


async def _soak(server: RunningServer, figures: SoakFigures, model: str, max_tokens: int) -> None:
    warmup = min(30.0, figures.duration_s / 5)
    start = time.monotonic()
    deadline = start + figures.duration_s
    latencies: list[float] = []
    tasks = [
        asyncio.create_task(_client_loop(server.base_url, i, model, max_tokens, deadline, figures))
        for i in range(figures.clients)
    ]
    tasks.append(asyncio.create_task(_probe_health(server.base_url, deadline, latencies)))
    await asyncio.sleep(warmup)
    figures.rss_start_mb = rss_mb(server.process.pid)
    await asyncio.gather(*tasks)
    figures.rss_end_mb = rss_mb(server.process.pid)
    figures.rss_drift_percent = 100 * (figures.rss_end_mb - figures.rss_start_mb) / figures.rss_start_mb
    latencies.sort()
    figures.health_probes = len(latencies)
    if latencies:
        figures.health_p50_ms = statistics.median(latencies)
        figures.health_p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        figures.health_max_ms = latencies[-1]


def run_soak(demo: Path, work: Path, duration: float, clients: int, max_tokens: int) -> SoakFigures:
    config = write_config(work, demo, max_loaded=2, parallel=8)
    figures = SoakFigures(duration_s=duration, clients=clients)
    with running_server(spec(config, "gguf"), work / "soak-server.log") as server:
        asyncio.run(_soak(server, figures, "gguf", max_tokens))
    return figures


# --- swaps ---------------------------------------------------------------------------------------------------
def run_swaps(demo: Path, work: Path, swaps: int) -> SwapFigures:
    config = write_config(work, demo, max_loaded=1, parallel=2)
    figures = SwapFigures(swaps=swaps)
    started = time.monotonic()
    with (
        running_server(spec(config, "gguf"), work / "swap-server.log") as server,
        httpx.Client(base_url=server.base_url, timeout=120) as client,
    ):
        for swap in range(1, swaps + 1):
            model = "mlx" if swap % 2 else "gguf"
            body = {"model": model, "messages": MESSAGES, "max_tokens": 4, "temperature": 0}
            if client.post("/v1/chat/completions", json=body).status_code != 200:
                figures.failures += 1
            if swap == SWAP_WARMUP:
                figures.rss_after_warmup_mb = rss_mb(server.process.pid)
            if swap % 25 == 0:
                figures.rss_samples_mb.append(round(rss_mb(server.process.pid), 1))
        figures.rss_end_mb = rss_mb(server.process.pid)
    figures.seconds = time.monotonic() - started
    base = figures.rss_after_warmup_mb or figures.rss_end_mb
    figures.rss_drift_percent = 100 * (figures.rss_end_mb - base) / base
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="soak seconds (0: no soak; default 300)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent streaming clients (default 50)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--swaps", type=int, default=300, help="GGUF<->MLX swaps (0: none; default 300)")
    parser.add_argument("--results", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    from heylook_llm.demo import write_demo_models

    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="heylook-soak-") as tmp:
        work = Path(tmp)
        demo = work / "demo"
        write_demo_models(demo)
        if args.duration > 0:
            soak = run_soak(demo, work, args.duration, args.clients, args.max_tokens)
            report["soak"] = asdict(soak)
            print(
                f"soak: {soak.clients} clients for {soak.duration_s:.0f}s: {soak.requests} streams, "
                f"{soak.failures} failures, {soak.tokens} tokens; /health p50 {soak.health_p50_ms:.1f} ms, "
                f"p99 {soak.health_p99_ms:.1f} ms (max {soak.health_max_ms:.1f}); RSS {soak.rss_start_mb:.1f} -> "
                f"{soak.rss_end_mb:.1f} MB ({soak.rss_drift_percent:+.1f}%)"
            )
            for example in soak.failure_examples:
                print("  failure:", example)
        if args.swaps > 0:
            swaps = run_swaps(demo, work, args.swaps)
            report["swaps"] = asdict(swaps)
            print(
                f"swaps: {swaps.swaps} GGUF<->MLX swaps in {swaps.seconds:.0f}s, {swaps.failures} failures; RSS "
                f"{swaps.rss_after_warmup_mb:.1f} MB after {SWAP_WARMUP} -> {swaps.rss_end_mb:.1f} MB "
                f"({swaps.rss_drift_percent:+.1f}%); every 25: {swaps.rss_samples_mb}"
            )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
