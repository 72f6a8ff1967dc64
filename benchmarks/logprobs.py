"""The cost of log probabilities: decode tok/s with `logprobs` (no alternatives, and 20) against the same requests
without, at 1 and 8 clients, on the llama.cpp path (and MLX with --mlx); the same on the llama.cpp backend
in-process (one sequence, the modes interleaved round by round, so that a busy machine slows them alike); and the
per-token cost of the log-softmax and top-20 over vocabularies of real models' sizes.

    .venv/bin/python -m benchmarks.logprobs [--model 50m|tiny] [--requests 4] [--max-tokens 128] [--mlx] [--rounds 5]

Without logprobs the llama.cpp engine never reads the logits back (its sampler chain runs in C), so that row is the
baseline the other rows are compared with. Every request is greedy and streamed, with end-of-sequence banned so that
all rows generate the same number of tokens. tok/s counts tokens after the first one over the time after it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import RECIPES, BenchModel, ensure_model
from benchmarks.servers import HEYLOOK_GGUF_ID, HEYLOOK_MLX_ID, heylook_config, heylook_spec, running_server
from benchmarks.structured import measure
from heylook_llm.backends.llama_cpp import LlamaCppBackend
from heylook_llm.backends.logprobs import Distribution, describe
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"
MODES = {"off": None, "logprobs": 0, "top20": 20}
"""Row name -> top_logprobs (None: logprobs not asked)."""
VOCABULARIES = {"demo 512": 512, "llama-3 128k": 128_256, "qwen 152k": 151_936}


def body_for(model: str, max_tokens: int, top: int | None, index: int, eos: list[int]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"Tell a story, number {index}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in eos},
    }
    if top is not None:
        body.update(logprobs=True, top_logprobs=top)
    return body


async def level(
    base: str, model: str, clients: int, requests: int, max_tokens: int, top: int | None, eos: list[int]
) -> dict[str, float]:
    bodies = [body_for(model, max_tokens, top, i, eos) for i in range(requests * clients)]
    return await measure(base, body_for(model, 8, top, -1, eos), bodies)


def per_token_cost(repeats: int = 200) -> dict[str, dict[str, float]]:
    """Microseconds per token for the chosen token's logprob alone and with a top-20 list, by vocabulary size."""
    rng = np.random.default_rng(0)
    costs: dict[str, dict[str, float]] = {}
    for name, size in VOCABULARIES.items():
        logits = (rng.standard_normal(size) * 4).astype(np.float32)
        row: dict[str, float] = {}
        for label, top in (("logprob_us", 0), ("top20_us", 20)):
            started = time.perf_counter()
            for _ in range(repeats):
                describe(Distribution(logits), 7, top, lambda t: b"x")
            row[label] = (time.perf_counter() - started) / repeats * 1e6
        costs[name] = row
        print("per token", name, {k: round(v, 1) for k, v in row.items()}, flush=True)
    return costs


def inprocess(model: BenchModel, max_tokens: int, rounds: int) -> dict[str, float]:
    """Median decode tok/s of one sequence on the llama.cpp backend, per mode, and each mode's ratio to `off`."""
    registry = parse_registry(
        {"models": [{"id": "bench", "provider": "llama_cpp", "config": {"model_path": str(model.gguf_path)}}]}, None
    )
    entry = registry.get("bench")
    assert entry is not None
    backend = LlamaCppBackend(entry, ServerSettings())
    backend.load()
    ban = tuple((t, -100.0) for t in model.eos_ids)
    speeds: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for _ in range(rounds):
            for mode, top in MODES.items():
                request = GenerationRequest(
                    "bench",
                    SamplingParams(temperature=0.0, max_tokens=max_tokens, logit_bias=ban),
                    messages=[ChatMessage("user", "Tell a story.")],
                    logprobs=top is not None,
                    top_logprobs=top or 0,
                )
                chunks = list(backend.generate(request))
                stats = chunks[-1].stats
                assert stats is not None
                speeds[mode].append((stats.completion_tokens - 1) / max(stats.generation_seconds, 1e-9))
    finally:
        backend.unload()
    result = {f"{mode}_tps": statistics.median(values) for mode, values in speeds.items()}
    for mode in ("logprobs", "top20"):
        result[f"{mode}_ratio"] = result[f"{mode}_tps"] / result["off_tps"]
    print("in-process llama.cpp", {k: round(v, 3) for k, v in result.items()}, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="50m")
    parser.add_argument("--requests", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--mlx", action="store_true", help="also measure the MLX model")
    parser.add_argument("--rounds", type=int, default=5, help="in-process rounds (each runs every mode once)")
    args = parser.parse_args()
    model = ensure_model(RECIPES[args.model], RESULTS / "models")
    config = heylook_config(model, RESULTS / "configs", prefix_cache=True, parallel=8, threads=1, batch_threads=2)
    report: dict[str, Any] = {"model": args.model, "max_tokens": args.max_tokens, "per_token": per_token_cost()}
    report["inprocess"] = inprocess(model, args.max_tokens, args.rounds)
    for model_id in (HEYLOOK_GGUF_ID, HEYLOOK_MLX_ID) if args.mlx else (HEYLOOK_GGUF_ID,):
        spec = heylook_spec(config, model_id, "heylookllm")
        with running_server(spec, RESULTS / "logs" / f"logprobs-{model_id}.log") as server:
            rows: dict[str, Any] = {}
            for clients in (1, 8):
                for mode, top in MODES.items():
                    key = f"{clients}c-{mode}"
                    rows[key] = asyncio.run(
                        level(
                            server.base_url, model_id, clients, args.requests, args.max_tokens, top, list(model.eos_ids)
                        )
                    )
                    print(model_id, key, {k: round(v, 1) for k, v in rows[key].items()}, flush=True)
                base = rows[f"{clients}c-off"]["decode_tps_per_stream"]
                for mode in ("logprobs", "top20"):
                    rows[f"{clients}c-{mode}-ratio"] = rows[f"{clients}c-{mode}"]["decode_tps_per_stream"] / base
            report[model_id] = rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"logprobs-{args.model}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
