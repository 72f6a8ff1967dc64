"""In-process baselines, without HTTP: run as a child process, print one JSON object on the last stdout line.

    python -m benchmarks.inprocess llama-cpp-python --model X.gguf --max-tokens 128 --reps 5 --bias '{"0": -100}'
    python -m benchmarks.inprocess heylookllm --config models.yaml --model-id ID --max-tokens 128 --reps 5 ...

`llama-cpp-python` streams `Llama.create_chat_completion` (what llama_cpp.server runs per request).
`heylookllm` drives heylookllm's own backend the way its model worker does: create_backend + load, then
open_sequence / step / close_sequence, admitting new sequences up to the backend's max_parallel between steps.
A child process keeps each baseline's native memory and threads away from the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from benchmarks.clients import user_prompt


def _llama_cpp_python(args: argparse.Namespace, bias: dict[str, float]) -> dict[str, Any]:
    from llama_cpp import Llama

    from benchmarks.models import BENCH_CONTEXT

    llama = Llama(
        model_path=args.model,
        n_ctx=BENCH_CONTEXT,
        n_threads=args.threads,
        n_threads_batch=args.batch_threads,
        verbose=False,
    )
    int_bias = {int(k): v for k, v in bias.items()}
    counter = iter(range(args.first_prompt, 1 << 30))

    def one(max_tokens: int) -> dict[str, Any]:
        messages: Any = [{"role": "user", "content": user_prompt(next(counter))}]
        start = time.perf_counter()
        ttft: float | None = None
        chunks = 0
        stream: Any = llama.create_chat_completion(
            messages, max_tokens=max_tokens, temperature=0.0, stream=True, logit_bias=int_bias
        )
        finish = None
        for event in stream:
            choice = event["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice["delta"].get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
        total = time.perf_counter() - start
        # As for llama_cpp.server (see benchmarks.clients): a stream cut at the limit produced max_tokens.
        tokens = max_tokens if finish == "length" and chunks else chunks
        return {"completion_tokens": tokens, "total_s": total, "ttft_s": ttft, "content_chunks": chunks}

    one(8)
    return {"single_requests": [one(args.max_tokens) for _ in range(args.reps)]}


def _heylook(args: argparse.Namespace, bias: dict[str, float]) -> dict[str, Any]:
    from heylook_llm.backends import create_backend
    from heylook_llm.config.registry import load_registry
    from heylook_llm.config.settings import ServerSettings
    from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams

    registry = load_registry(Path(args.config))
    entry = registry.get(args.model_id)
    if entry is None:
        raise SystemExit(f"model '{args.model_id}' is not in {args.config}")
    backend = create_backend(entry, ServerSettings())
    backend.load()

    counter = iter(range(args.first_prompt, 1 << 30))

    def request(max_tokens: int) -> GenerationRequest:
        sampling = SamplingParams(
            temperature=0.0,
            max_tokens=max_tokens,
            logit_bias=tuple(sorted((int(k), float(v)) for k, v in bias.items())),
        )
        return GenerationRequest(
            model_id=entry.id,
            sampling=sampling,
            messages=[ChatMessage("user", user_prompt(next(counter)))],
            request_id="bench",
        )

    def run(count: int, max_tokens: int) -> tuple[list[dict[str, Any]], float]:
        """`count` requests queued at once, stepped together up to max_parallel, as the model worker does."""
        waiting = deque(range(count))
        active: list[dict[str, Any]] = []
        done: list[dict[str, Any]] = []
        started = time.perf_counter()
        while waiting or active:
            while waiting and len(active) < backend.max_parallel:
                waiting.popleft()
                req_start = time.perf_counter()
                handle = backend.open_sequence(request(max_tokens))
                active.append({"handle": handle, "start": req_start, "ttft_s": None, "queued_s": req_start - started})
            results = backend.step([a["handle"] for a in active])
            now = time.perf_counter()
            for item, chunk in zip(list(active), results, strict=True):
                if chunk is None:
                    continue
                if isinstance(chunk, BaseException):
                    raise chunk
                if item["ttft_s"] is None and chunk.text:
                    item["ttft_s"] = now - item["start"]
                if chunk.finish_reason is not None:
                    backend.close_sequence(item["handle"])
                    active.remove(item)
                    stats = chunk.stats
                    done.append(
                        {
                            "completion_tokens": stats.completion_tokens if stats else 0,
                            "total_s": now - item["start"],
                            "ttft_s": item["ttft_s"],
                            "queued_s": item["queued_s"],
                        }
                    )
        return done, time.perf_counter() - started

    try:
        run(1, 8)
        singles = [run(1, args.max_tokens)[0][0] for _ in range(args.reps)]
        out: dict[str, Any] = {"single_requests": singles, "max_parallel": backend.max_parallel, "levels": []}
        for clients in args.levels:
            done, wall = run(clients, args.max_tokens)
            tokens = sum(d["completion_tokens"] for d in done)
            out["levels"].append(
                {"clients": clients, "wall_s": wall, "total_tokens": tokens, "total_tokens_per_second": tokens / wall}
            )
        return out
    finally:
        backend.unload()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["llama-cpp-python", "heylookllm"])
    parser.add_argument("--model", help="GGUF file (llama-cpp-python)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads, one-token steps (llama-cpp-python)")
    parser.add_argument(
        "--batch-threads", type=int, default=1, help="llama.cpp threads, longer steps (llama-cpp-python)"
    )
    parser.add_argument("--config", help="models.yaml (heylookllm)")
    parser.add_argument("--model-id", help="model id in --config (heylookllm)")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--first-prompt", type=int, default=0, help="number of the first prompt (see user_prompt)")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",") if x], default=[])
    parser.add_argument("--bias", required=True, help="logit_bias as JSON: token id -> bias")
    args = parser.parse_args(argv)
    bias = {str(k): float(v) for k, v in json.loads(args.bias).items()}
    result = _llama_cpp_python(args, bias) if args.kind == "llama-cpp-python" else _heylook(args, bias)
    sys.stdout.flush()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
