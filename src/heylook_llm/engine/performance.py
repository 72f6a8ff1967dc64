"""The /v1/performance report: window percentiles and totals from a `MetricsRecorder`, plus a summary paragraph
written from those numbers (so that it can never claim more than was measured)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heylook_llm.engine.metrics import GenerationSample, MetricsRecorder, ModelFigures, percentile


def _spread(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}


def _window_figure(
    window: list[GenerationSample], pick: Callable[[GenerationSample], float | None]
) -> dict[str, float | None]:
    return _spread([v for v in (pick(s) for s in window) if v is not None])


def _rate(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if tokens > 0 and seconds > 0 else None


def figures_report(figures: ModelFigures) -> dict[str, Any]:
    t = figures.totals
    window = list(figures.window)
    evaluated = t.prompt_tokens - t.cached_prompt_tokens
    return {
        "requests": t.generations,
        "errors": t.errors,
        "errors_by_type": dict(t.errors_by_type),
        "cancelled": t.cancelled,
        "window_requests": len(window),
        "time_to_first_token_seconds": _window_figure(window, lambda s: s.time_to_first_token),
        "queue_wait_seconds": {
            **_window_figure(window, lambda s: s.queue_wait),
            "total": t.queue_seconds,
        },
        "prompt_tokens_per_second": {
            **_window_figure(window, lambda s: s.prompt_tokens_per_second),
            "since_start": _rate(evaluated, t.prompt_eval_seconds),
        },
        "generation_tokens_per_second": {
            **_window_figure(window, lambda s: s.generation_tokens_per_second),
            "since_start": _rate(t.completion_tokens, t.generation_seconds),
        },
        "load_seconds": {
            **_spread(list(figures.load_times)),
            "last": figures.load_times[-1] if figures.load_times else None,
            "total": t.load_seconds,
        },
        "loads": t.loads,
        "load_failures": t.load_failures,
        "evictions": t.evictions,
        "expirations": t.expirations,
        "tokens": {
            "prompt": t.prompt_tokens,
            "cached_prompt": t.cached_prompt_tokens,
            "completion": t.completion_tokens,
        },
    }


def performance_report(recorder: MetricsRecorder) -> dict[str, Any]:
    overall = figures_report(recorder.overall())
    models = {model_id: figures_report(f) for model_id, f in sorted(recorder.models().items())}
    return {
        "object": "performance",
        "started_at": int(recorder.started_at),
        "uptime_seconds": recorder.uptime_seconds,
        "window_size": recorder.window,
        "overall": overall,
        "models": models,
        "memory": recorder.memory_report(),
        "upstreams": [
            {
                "model": r.model_id,
                "replica": r.replica,
                "base_url": r.base_url,
                "healthy": r.healthy,
                "in_flight": r.in_flight,
                "requests": r.requests,
                "errors": r.errors,
                "mean_time_to_first_token_seconds": (
                    r.time_to_first_token_sum_seconds / r.time_to_first_token_count
                    if r.time_to_first_token_count
                    else None
                ),
                "last_error": r.last_error,
            }
            for r in recorder.upstream_replicas()
        ],
        "summary": summary(recorder.uptime_seconds, overall, models),
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _per_second(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} tokens/s"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def summary(uptime: float, overall: dict[str, Any], models: dict[str, dict[str, Any]]) -> str:
    """One paragraph in plain words, written only from the figures passed in."""
    requests = overall["requests"]
    parts = [
        f"In {_uptime(uptime)} since start the server finished {_plural(requests, 'generation')} "
        f"on {_plural(len(models), 'model')}, with {_plural(overall['errors'], 'error')} "
        f"and {overall['cancelled']} cancelled by their clients."
    ]
    if requests:
        ttft = overall["time_to_first_token_seconds"]
        prompt = overall["prompt_tokens_per_second"]
        gen = overall["generation_tokens_per_second"]
        queue = overall["queue_wait_seconds"]
        parts.append(
            f"Over the last {_plural(overall['window_requests'], 'generation')}, the first token came after "
            f"{_ms(ttft['p50'])} at the median ({_ms(ttft['p95'])} at p95), prompts were read at "
            f"{_per_second(prompt['p50'])} and replies written at {_per_second(gen['p50'])} (medians), and requests "
            f"waited {_ms(queue['p50'])} in the queue at the median ({_ms(queue['p95'])} at p95)."
        )
        tokens = overall["tokens"]
        if tokens["prompt"]:
            share = 100.0 * tokens["cached_prompt"] / tokens["prompt"]
            parts.append(f"{share:.0f}% of {tokens['prompt']:,} prompt tokens were reused from the prefix cache.")
    if overall["loads"]:
        load = overall["load_seconds"]
        parts.append(
            f"Models were loaded {_plural(overall['loads'], 'time')} (median {_ms(load['p50'])}), "
            f"evicted {_plural(overall['evictions'], 'time')} to make room and unloaded "
            f"{_plural(overall['expirations'], 'time')} when their keep-alive ran out."
        )
    busiest = max(models.items(), key=lambda item: item[1]["requests"], default=None)
    if busiest is not None and busiest[1]["requests"] and len(models) > 1:
        parts.append(f"The busiest model was {busiest[0]} with {_plural(busiest[1]['requests'], 'generation')}.")
    return " ".join(parts)
