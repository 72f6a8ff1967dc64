"""What the benchmark runs, in which order, and how each figure is recorded.

Work is grouped by (model, format). In a group, every server is started (each on its own port; idle servers use
no CPU) and warmed up; then the measurements take turns between them, one server under load at a time, so
that slow spells of a shared machine hit all of them alike instead of whichever ran at that minute:

- throughput: for each concurrency level N, a few waves of N simultaneous requests per server, the servers'
  waves interleaved; a level's figure is the median wave's total tok/s. Level 1 gives the single-client rate
  (median request) and TTFT.
- 5-turn chat: conversations interleaved the same way; the figure is the median TTFT of each turn.
- in-process baselines run as child processes, half of their requests before the servers and half after.

A server that fails to start is recorded with its error and the rest goes on. Results are saved after every
group, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.clients import RequestOptions, new_client, open_connections, run_conversation, run_level, warm_up
from benchmarks.cpu import NOISY_OTHER_CORES, CpuMeter, wait_for_quiet
from benchmarks.models import BenchModel
from benchmarks.prompts import USER_TURNS, system_prompt
from benchmarks.servers import (
    DEFAULT_BATCH_THREADS,
    DEFAULT_THREADS,
    HEYLOOK_GGUF_ID,
    HEYLOOK_MLX_ID,
    RunningServer,
    ServerSpec,
    ServerStartError,
    heylook_config,
    heylook_spec,
    llama_cpp_server_spec,
    llama_server_spec,
    mlx_lm_server_spec,
    running_server,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAMES = ("tiny", "50m", "smollm2")
FORMATS = ("gguf", "mlx")
GROUP_RUNNERS: dict[str, tuple[str, ...]] = {
    "gguf": (
        "inprocess-llama-cpp-python",
        "inprocess-heylookllm",
        "heylookllm",
        "heylookllm-nocache",
        "llama-server",
        "llama_cpp.server",
    ),
    "mlx": ("inprocess-heylookllm", "heylookllm", "mlx_lm.server"),
}
RUNNERS = tuple(dict.fromkeys(r for runners in GROUP_RUNNERS.values() for r in runners))
CHAT_ONLY_RUNNERS = ("heylookllm-nocache",)
"""Servers that exist only for the prefix-cache comparison: they run the 5-turn chat and nothing else."""


@dataclass(frozen=True, slots=True)
class Plan:
    max_tokens: int = 128
    levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    waves: tuple[int, ...] = (10, 4, 3, 5, 3)
    """Waves per level (same order as `levels`): each wave is `clients` requests sent at once. The 1-, 8- and
    16-client levels carry the targets: more waves there keep one slow spell of the machine from deciding them."""
    long_prompt_tokens: int = 2000
    """Prompt processing: a prompt of this many tokens (made-up sentences, new to every cache), 1 generated token."""
    long_prompts: int = 3
    """Long-prompt requests per server (interleaved between servers); 0: not measured."""
    conversations: int = 5
    turns: int = len(USER_TURNS)
    turn_max_tokens: int = 32
    system_tokens: int = 1000
    parallel: int = 8
    """heylookllm's `parallel` (sequence slots) in the generated models.yaml."""
    threads: int = DEFAULT_THREADS
    """llama.cpp threads of every GGUF runner for one-token steps."""
    batch_threads: int = DEFAULT_BATCH_THREADS
    """llama.cpp threads for steps of several tokens (where the runner has the setting)."""
    inprocess_reps: int = 3
    """Single-client requests of each in-process baseline, before the servers and again after them."""
    inprocess_levels: tuple[int, ...] = (8,)
    """Concurrency levels for heylookllm's engine driven in-process (its batching ceiling without HTTP)."""

    def waves_at(self, clients: int) -> int:
        return self.waves[self.levels.index(clients)]

    def lighter(self) -> Plan:
        """For MLX on a CPU (its matrix products are slow here): half the tokens, fewer waves, no 5-turn chat."""
        return Plan(
            max_tokens=max(self.max_tokens // 2, 1),
            levels=self.levels,
            waves=tuple(3 if n == 1 else 1 for n in self.levels),
            conversations=0,
            turns=self.turns,
            turn_max_tokens=self.turn_max_tokens,
            system_tokens=self.system_tokens,
            parallel=self.parallel,
            threads=self.threads,
            batch_threads=self.batch_threads,
            inprocess_reps=1,
            inprocess_levels=(),
            long_prompts=0,
        )


FULL_PLAN = Plan()
QUICK_PLAN = Plan(
    max_tokens=32,
    levels=(1, 4),
    waves=(3, 1),
    conversations=1,
    inprocess_reps=2,
    inprocess_levels=(4,),
    long_prompt_tokens=500,
    long_prompts=1,
)


@dataclass(slots=True)
class Group:
    model: BenchModel
    fmt: str
    runners: list[str]
    plan: Plan

    @property
    def name(self) -> str:
        return f"{self.model.name}/{self.fmt}"


def plan_groups(models: list[BenchModel], plan: Plan, only: list[str], light_mlx_models: set[str]) -> list[Group]:
    """--only names select by category (model, format, runner): for each category named, a value must match."""
    chosen_models = [t for t in only if t in MODEL_NAMES]
    chosen_formats = [t for t in only if t in FORMATS]
    chosen_runners = [t for t in only if t in RUNNERS]
    groups = []
    for model in models:
        if chosen_models and model.name not in chosen_models:
            continue
        for fmt in FORMATS:
            if chosen_formats and fmt not in chosen_formats:
                continue
            if fmt == "mlx" and model.mlx_dir is None:
                continue  # a real GGUF file has no MLX twin
            runners = [r for r in GROUP_RUNNERS[fmt] if not chosen_runners or r in chosen_runners]
            if plan.conversations == 0:
                runners = [r for r in runners if r not in CHAT_ONLY_RUNNERS]
            if runners:
                group_plan = plan.lighter() if fmt == "mlx" and model.name in light_mlx_models else plan
                groups.append(Group(model, fmt, runners, group_plan))
    return groups


def ban_list(model: BenchModel) -> dict[str, float]:
    """logit_bias for every request: end-of-sequence tokens, and byte tokens that are no UTF-8 text alone.

    Random weights pick lone bytes >= 0x80 now and then; servers hold such bytes back until a character is
    complete (llama-cpp-python's stream then sends nothing until the end), which would distort TTFT and
    streaming. Banning them gives every server plain ASCII text to stream.
    """
    if model.tokenizer_json is None:
        # A real GGUF model: its ban list was read from its own vocabulary (models.external_model).
        return {str(i): -100.0 for i in model.eos_ids}
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model.tokenizer_json))
    partial = [i for i in range(tokenizer.get_vocab_size()) if "\ufffd" in tokenizer.decode([i])]
    return {str(i): -100.0 for i in sorted({*model.eos_ids, *partial})}


@dataclass(slots=True)
class RunContext:
    results_dir: Path
    logs_dir: Path
    configs_dir: Path
    record: dict[str, Any]
    save: Callable[[], None]
    quiet_wait_s: float = 20.0
    """Before each group, wait up to this long for other programs to leave the CPUs alone."""
    started: float = field(default_factory=time.perf_counter)

    def progress(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)


def run_groups(groups: list[Group], ctx: RunContext) -> None:
    runs: list[dict[str, Any]] = ctx.record.setdefault("runs", [])
    for group in groups:
        ctx.progress(f"{group.name}: {', '.join(group.runners)}")
        quiet = wait_for_quiet(ctx.quiet_wait_s)
        if quiet is not None and quiet > NOISY_OTHER_CORES:
            ctx.progress(f"  other programs still use {quiet:.2f} cores after {ctx.quiet_wait_s:.0f}s; going on")
        started = time.perf_counter()
        entries = {
            runner: {
                "model": group.model.name,
                "format": group.fmt,
                "runner": runner,
                "status": "ok",
                "max_tokens": group.plan.max_tokens,
            }
            for runner in group.runners
        }
        runs.extend(entries.values())
        try:
            _run_group(group, entries, ctx)
        finally:
            for entry in entries.values():
                _summarize(entry)
            ctx.save()
        ctx.progress(f"{group.name} done in {time.perf_counter() - started:.0f}s")
        for runner, entry in entries.items():
            ctx.progress(f"  {runner}: {_brief(entry)}")


def _run_group(group: Group, entries: dict[str, dict[str, Any]], ctx: RunContext) -> None:
    inprocess = [r for r in group.runners if r.startswith("inprocess-")]
    servers = [r for r in group.runners if not r.startswith("inprocess-")]
    for runner in inprocess:
        _inprocess_phase(group, runner, "before", entries[runner], ctx)
    if servers:
        with contextlib.ExitStack() as stack:
            live: dict[str, RunningServer] = {}
            for runner in servers:
                entry = entries[runner]
                try:
                    spec = _spec_for(group, runner, ctx)
                except ServerStartError as exc:
                    _fail(entry, f"did not start: {exc}")
                    continue
                log_path = ctx.logs_dir / f"{group.model.name}-{group.fmt}-{runner}.log"
                entry["log"] = str(log_path)
                entry["command"] = spec.command
                ctx.progress(f"  starting {runner}")
                try:
                    live[runner] = stack.enter_context(running_server(spec, log_path))
                except Exception as exc:
                    _fail(entry, f"did not start: {exc}")
            if live:
                try:
                    asyncio.run(_measure_servers(group, live, entries, ctx))
                except Exception as exc:
                    for runner in live:
                        _fail(entries[runner], f"measuring stopped: {type(exc).__name__}: {exc}")
    for runner in inprocess:
        if entries[runner]["status"] == "ok":
            _inprocess_phase(group, runner, "after", entries[runner], ctx)


def _inprocess_phase(group: Group, runner: str, phase: str, entry: dict[str, Any], ctx: RunContext) -> None:
    try:
        _run_inprocess(group, runner, phase, entry, ctx)
    except Exception as exc:
        _fail(entry, f"{type(exc).__name__}: {exc}")


def _fail(entry: dict[str, Any], error: str) -> None:
    entry["status"] = "failed"
    entry["error"] = error


def _spec_for(group: Group, runner: str, ctx: RunContext) -> ServerSpec:
    if runner in ("heylookllm", "heylookllm-nocache"):
        config = heylook_config(
            group.model,
            ctx.configs_dir,
            prefix_cache=runner == "heylookllm",
            parallel=group.plan.parallel,
            threads=group.plan.threads,
            batch_threads=group.plan.batch_threads,
        )
        return heylook_spec(config, HEYLOOK_GGUF_ID if group.fmt == "gguf" else HEYLOOK_MLX_ID, runner)
    if runner == "llama_cpp.server":
        return llama_cpp_server_spec(group.model, group.plan.threads, group.plan.batch_threads)
    if runner == "llama-server":
        return llama_server_spec(group.model, group.plan.threads, group.plan.batch_threads, group.plan.parallel)
    if runner == "mlx_lm.server":
        return mlx_lm_server_spec(group.model)
    raise ValueError(f"no server for runner {runner}")


# --- servers, interleaved ----------------------------------------------------------------------------------
def _rotated(items: list[str], shift: int) -> list[str]:
    if not items:
        return items
    shift %= len(items)
    return items[shift:] + items[:shift]


async def _measure_servers(
    group: Group, live: dict[str, RunningServer], entries: dict[str, dict[str, Any]], ctx: RunContext
) -> None:
    plan = group.plan
    bias = ban_list(group.model)
    options = {r: RequestOptions(s.spec.request_model, plan.max_tokens, bias) for r, s in live.items()}
    ready: list[str] = []
    for runner, server in live.items():
        warm = await warm_up(server.base_url, options[runner])
        entries[runner]["warmup"] = warm.summary()
        if warm.ok:
            counted = "usage" if warm.tokens_from_usage else "max_tokens when finish_reason is length, else chunks"
            entries[runner]["tokens_counted_from"] = counted
            ready.append(runner)
        else:
            _fail(entries[runner], f"warm-up request failed: {warm.error}")
    meter = CpuMeter()
    throughput = [r for r in ready if r not in CHAT_ONLY_RUNNERS]
    next_prompt = 0
    for clients in plan.levels:
        async with contextlib.AsyncExitStack() as stack:
            # Each runner's clients keep their connections across the level's waves, as SDK clients do: no
            # measured request pays for opening one.
            pools: dict[str, httpx.AsyncClient] = {}
            for runner in throughput:
                pool = await stack.enter_async_context(new_client(live[runner].base_url, options[runner], clients))
                await open_connections(pool, clients)
                pools[runner] = pool
            await _run_waves(group, live, entries, meter, throughput, options, pools, clients, next_prompt)
        next_prompt += clients * plan.waves_at(clients)
        rates = ", ".join(
            f"{r} {statistics.median(w['total_tokens_per_second'] for w in entries[r]['waves'][str(clients)]):.0f}"
            for r in throughput
        )
        ctx.progress(f"  {clients} client(s), total tok/s: {rates}")
    for index in range(plan.long_prompts):
        # Prompt processing: a long prompt no cache has seen, one token generated; TTFT is the prompt's time.
        prompt = system_prompt(
            group.model.tokenizer_json, plan.long_prompt_tokens, seed=1000 + index, gguf_path=group.model.gguf_path
        )
        long_options = {r: RequestOptions(o.model, 1, bias) for r, o in options.items()}
        for runner in _rotated(throughput, index):
            meter.watched = [live[runner].process.pid]
            meter.start()
            result = await run_conversation(live[runner].base_url, long_options[runner], prompt, ["Go on."])
            data = result.turns[0].summary()
            data["other_cores"] = meter.stop()
            entries[runner].setdefault("long_prompts", []).append(data)
    if plan.long_prompts:
        ctx.progress(f"  {plan.long_prompts} long prompt(s) of {plan.long_prompt_tokens} tokens done")
    for index in range(plan.conversations):
        prompt = system_prompt(
            group.model.tokenizer_json, plan.system_tokens, seed=index + 1, gguf_path=group.model.gguf_path
        )
        chat_options = {r: RequestOptions(o.model, plan.turn_max_tokens, bias) for r, o in options.items()}
        for runner in _rotated(ready, index):
            meter.watched = [live[runner].process.pid]
            meter.start()
            result = await run_conversation(
                live[runner].base_url, chat_options[runner], prompt, USER_TURNS[: plan.turns]
            )
            conversation = result.to_json()
            conversation["other_cores"] = meter.stop()
            entries[runner].setdefault("conversations", []).append(conversation)
        ctx.progress(f"  5-turn chat {index + 1}/{plan.conversations} done")


async def _run_waves(
    group: Group,
    live: dict[str, RunningServer],
    entries: dict[str, dict[str, Any]],
    meter: CpuMeter,
    throughput: list[str],
    options: dict[str, RequestOptions],
    pools: dict[str, httpx.AsyncClient],
    clients: int,
    first_prompt: int,
) -> None:
    """The waves of one concurrency level, the servers taking turns within each wave."""
    for wave in range(group.plan.waves_at(clients)):
        prompt = first_prompt + wave * clients
        for runner in _rotated(throughput, wave):
            meter.watched = [live[runner].process.pid]
            meter.start()
            level = await run_level(live[runner].base_url, options[runner], clients, 1, prompt, pools[runner])
            other = meter.stop()
            data = level.to_json()
            data["other_cores"] = other
            data["server_cpu_s"] = meter.watched_s
            data["client_cpu_s"] = meter.own_s
            entries[runner].setdefault("waves", {}).setdefault(str(clients), []).append(data)


# --- in-process baselines ----------------------------------------------------------------------------------
def _run_inprocess(group: Group, runner: str, phase: str, entry: dict[str, Any], ctx: RunContext) -> None:
    plan = group.plan
    command = [sys.executable, "-m", "benchmarks.inprocess"]
    if runner == "inprocess-llama-cpp-python":
        command += ["llama-cpp-python", "--model", str(group.model.gguf_path.resolve())]
        command += ["--threads", str(plan.threads), "--batch-threads", str(plan.batch_threads)]
    else:
        config = heylook_config(
            group.model,
            ctx.configs_dir,
            prefix_cache=True,
            parallel=plan.parallel,
            threads=plan.threads,
            batch_threads=plan.batch_threads,
        )
        model_id = HEYLOOK_GGUF_ID if group.fmt == "gguf" else HEYLOOK_MLX_ID
        levels = ",".join(str(n) for n in plan.inprocess_levels) if phase == "before" else ""
        command += ["heylookllm", "--config", str(config), "--model-id", model_id, "--levels", levels]
    bias = json.dumps(ban_list(group.model))
    command += ["--max-tokens", str(plan.max_tokens), "--reps", str(plan.inprocess_reps), "--bias", bias]
    # The second phase continues the prompt numbers, so that no request repeats an earlier prompt.
    command += ["--first-prompt", "0" if phase == "before" else "10000"]
    log_path = ctx.logs_dir / f"{group.model.name}-{group.fmt}-{runner}-{phase}.log"
    entry.setdefault("logs", []).append(str(log_path))
    ctx.progress(f"  {runner} ({phase} the servers)")
    meter = CpuMeter()
    meter.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=900, check=False)
    other = meter.stop()
    log_path.write_text(f"$ {' '.join(command)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"exit status {done.returncode}: {tail[0][:300]}; see {log_path}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    entry.setdefault("single_requests", []).extend(result["single_requests"])
    for level in result.get("levels", []):
        level["other_cores"] = other
        entry.setdefault("waves", {}).setdefault(str(level["clients"]), []).append(level)
    entry.setdefault("other_cores_runs", []).append(other)
    if "max_parallel" in result:
        entry["max_parallel"] = result["max_parallel"]


# --- summaries ----------------------------------------------------------------------------------------------
def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted values (with fewer than 100 values, p99 is the largest)."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def _summarize(entry: dict[str, Any]) -> None:
    """Figures the report reads: single (rate, TTFT), levels (median wave), turn TTFTs, other programs' CPU."""
    others: list[float] = [o for o in entry.get("other_cores_runs", []) if o is not None]
    waves: dict[str, list[dict[str, Any]]] = entry.get("waves", {})
    levels = []
    for clients, items in sorted(waves.items(), key=lambda kv: int(kv[0])):
        others += [w["other_cores"] for w in items if w.get("other_cores") is not None]
        ttfts = sorted(r["ttft_s"] for w in items for r in w.get("requests", []) if r.get("ttft_s") is not None)
        levels.append(
            {
                "clients": int(clients),
                "waves": len(items),
                "total_tokens_per_second": _median([w["total_tokens_per_second"] for w in items]),
                "failures": sum(w.get("failures", 0) for w in items),
                "ttft_p50_s": _percentile(ttfts, 50),
                "ttft_p99_s": _percentile(ttfts, 99),
            }
        )
    singles = entry.get("single_requests")
    if singles is None and "1" in waves:
        singles = [r for w in waves["1"] for r in w.get("requests", [])]
    if singles:
        ok = [r for r in singles if r.get("ok", True) and r["total_s"] > 0]
        entry["single"] = {
            "tokens_per_second": _median([r["completion_tokens"] / r["total_s"] for r in ok]),
            "ttft_s": _median([r["ttft_s"] for r in ok if r.get("ttft_s") is not None]),
            "requests": len(ok),
        }
        one_client = waves.get("1", [])
        tokens = sum(w["total_tokens"] for w in one_client)
        if tokens and all("server_cpu_s" in w for w in one_client):
            # CPU time per token hardly moves when other programs slow the wall clock down.
            entry["single"]["server_cpu_us_per_token"] = 1e6 * sum(w["server_cpu_s"] for w in one_client) / tokens
            entry["single"]["client_cpu_us_per_token"] = 1e6 * sum(w["client_cpu_s"] for w in one_client) / tokens
        if levels and "1" not in waves:
            # In-process baselines: one client's total rate is its per-request rate.
            levels.insert(
                0, {"clients": 1, "waves": 0, "total_tokens_per_second": entry["single"]["tokens_per_second"]}
            )
    if levels:
        entry["levels"] = levels
    long_prompts = [r for r in entry.get("long_prompts") or [] if r.get("ttft_s") is not None]
    if long_prompts:
        others += [r["other_cores"] for r in long_prompts if r.get("other_cores") is not None]
        entry["long_prompt"] = {
            "ttft_s": _median([r["ttft_s"] for r in long_prompts]),
            "prompt_tokens": next((r["prompt_tokens"] for r in long_prompts if r.get("prompt_tokens")), None),
            "requests": len(long_prompts),
        }
    conversations = entry.get("conversations") or []
    if conversations:
        others += [c["other_cores"] for c in conversations if c.get("other_cores") is not None]
        turns = max(len(c["turns"]) for c in conversations)
        entry["turn_ttft_s"] = [
            _median([c["turns"][t]["ttft_s"] for c in conversations if len(c["turns"]) > t and c["turns"][t]["ttft_s"]])
            for t in range(turns)
        ]
        last = [c["turns"][-1] for c in conversations]
        entry["turn_cached_tokens"] = [last[0].get("cached_tokens")]
        entry["turn_prompt_tokens"] = [last[0].get("prompt_tokens")]
        errors = sorted({t["error"] for c in conversations for t in c["turns"] if t["error"]})
        if errors:
            entry["chat_errors"] = errors
    if others:
        entry["other_cores_max"] = max(others)
        entry["noisy"] = max(others) > NOISY_OTHER_CORES


def _brief(entry: dict[str, Any]) -> str:
    if entry["status"] != "ok":
        return f"FAILED {entry.get('error', '')}"[:300]
    parts = []
    single = entry.get("single") or {}
    if single.get("tokens_per_second"):
        parts.append(f"1 client {single['tokens_per_second']:.0f} tok/s")
    for level in entry.get("levels", []):
        if level["clients"] > 1 and level["total_tokens_per_second"]:
            parts.append(f"{level['clients']} clients {level['total_tokens_per_second']:.0f} tok/s")
    turns = entry.get("turn_ttft_s") or []
    if turns and turns[-1] is not None:
        parts.append(f"turn-{len(turns)} TTFT {turns[-1] * 1000:.0f} ms")
    if entry.get("noisy"):
        parts.append(f"(other programs used up to {entry['other_cores_max']:.2f} cores)")
    return ", ".join(parts)
