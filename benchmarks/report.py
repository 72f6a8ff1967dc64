"""Turn the recorded runs into a text table, ratio checks against the issue's targets, and a PNG chart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

Run = dict[str, Any]

RUNNER_ORDER = (
    "heylookllm",
    "heylookllm-nocache",
    "inprocess-heylookllm",
    "llama-server",
    "llama_cpp.server",
    "inprocess-llama-cpp-python",
    "mlx_lm.server",
)
LLAMA_SERVER_LEVELS = (1, 8, 16)
"""Concurrency levels whose total tok/s must reach llama-server's (issue 22)."""
TTFT_CLIENTS = 8
"""The level whose TTFT p50 and p99 must not exceed llama-server's."""


def find(runs: list[Run], model: str, fmt: str, runner: str) -> Run | None:
    for run in runs:
        if run["model"] == model and run["format"] == fmt and run["runner"] == runner and run["status"] == "ok":
            return run
    return None


def single_rate(run: Run | None) -> float | None:
    value = ((run or {}).get("single") or {}).get("tokens_per_second")
    return float(value) if value else None


def single_ttft(run: Run | None) -> float | None:
    value = ((run or {}).get("single") or {}).get("ttft_s")
    return float(value) if value is not None else None


def level_rate(run: Run | None, clients: int) -> float | None:
    for level in (run or {}).get("levels") or []:
        if level["clients"] == clients:
            return float(level["total_tokens_per_second"]) or None
    return None


def level_ttft(run: Run | None, clients: int, which: str) -> float | None:
    """`which`: "p50" or "p99" of every request's TTFT at that level."""
    for level in (run or {}).get("levels") or []:
        if level["clients"] == clients:
            value = level.get(f"ttft_{which}_s")
            return float(value) if value is not None else None
    return None


def long_prompt_ttft(run: Run | None) -> float | None:
    value = ((run or {}).get("long_prompt") or {}).get("ttft_s")
    return float(value) if value is not None else None


def last_turn_ttft(run: Run | None) -> float | None:
    turns = (run or {}).get("turn_ttft_s") or []
    return float(turns[-1]) if turns and turns[-1] is not None else None


# --- ratio checks ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Check:
    label: str
    value: float | None
    target: float | None
    """None: shown for information, no target."""
    at_most: bool = False
    """True when the ratio must stay at or below the target (TTFT with the cache against without)."""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        if self.target is None:
            return "-"
        ok = self.value <= self.target if self.at_most else self.value >= self.target
        return "pass" if ok else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.label,
            "value": self.value,
            "target": self.target,
            "at_most": self.at_most,
            "verdict": self.verdict,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def checks(runs: list[Run], models: list[str], top: int = 8) -> list[Check]:
    """The issue's ratios; `top` is the highest concurrency level measured (8 in a full run)."""
    out: list[Check] = []

    def get(model: str, fmt: str, runner: str) -> Run | None:
        return find(runs, model, fmt, runner)

    def add(label: str, a: float | None, b: float | None, target: float | None, at_most: bool = False) -> None:
        if a is None and b is None:
            return  # neither side was measured in this run (a subset, or a model without that format)
        out.append(Check(label, _ratio(a, b), target, at_most))

    for model in models:
        hey = get(model, "gguf", "heylookllm")
        native = get(model, "gguf", "llama-server")
        if native is not None:
            for clients in LLAMA_SERVER_LEVELS:
                add(
                    f"{model} gguf  {clients} client(s) total: heylookllm / llama-server",
                    level_rate(hey, clients),
                    level_rate(native, clients),
                    1.0 if model in ("50m", "smollm2") else None,
                )
            for which in ("p50", "p99"):
                add(
                    f"{model} gguf  TTFT {which} at {TTFT_CLIENTS} clients: heylookllm / llama-server",
                    level_ttft(hey, TTFT_CLIENTS, which),
                    level_ttft(native, TTFT_CLIENTS, which),
                    1.0 if model in ("50m", "smollm2") else None,
                    at_most=True,
                )
            add(
                f"{model} gguf  prompt processing (long prompt): heylookllm / llama-server",
                long_prompt_ttft(native),
                long_prompt_ttft(hey),
                0.95 if model in ("50m", "smollm2") else None,
            )
        peer = get(model, "gguf", "llama_cpp.server")
        hey_inproc = get(model, "gguf", "inprocess-heylookllm")
        llama_inproc = get(model, "gguf", "inprocess-llama-cpp-python")
        nocache = get(model, "gguf", "heylookllm-nocache")
        single_target = {"50m": 1.3, "tiny": 5.0}.get(model)
        add(
            f"{model} gguf  1 client: heylookllm / llama_cpp.server", single_rate(hey), single_rate(peer), single_target
        )
        add(
            f"{model} gguf  {top} clients total: heylookllm / llama_cpp.server",
            level_rate(hey, top),
            level_rate(peer, top),
            4.0 if model == "50m" else None,
        )
        add(
            f"{model} gguf  1 client: heylookllm HTTP / its engine in-process",
            single_rate(hey),
            single_rate(hey_inproc),
            0.95 if model == "50m" else None,
        )
        add(
            f"{model} gguf  turn-5 TTFT: prefix cache on / off",
            last_turn_ttft(hey),
            last_turn_ttft(nocache),
            0.3,
            at_most=True,
        )
        add(
            f"{model} gguf  1 client: heylookllm / in-process llama-cpp-python",
            single_rate(hey),
            single_rate(llama_inproc),
            None,
        )
        add(
            f"{model} gguf  turn-5 TTFT: heylookllm / llama_cpp.server",
            last_turn_ttft(hey),
            last_turn_ttft(peer),
            None,
            at_most=True,
        )
        hey_mlx = get(model, "mlx", "heylookllm")
        mlx_peer = get(model, "mlx", "mlx_lm.server")
        add(f"{model} mlx   1 client: heylookllm / mlx_lm.server", single_rate(hey_mlx), single_rate(mlx_peer), 1.0)
        add(
            f"{model} mlx   {top} clients total: heylookllm / mlx_lm.server",
            level_rate(hey_mlx, top),
            level_rate(mlx_peer, top),
            1.0,
        )
        add(
            f"{model} mlx   1 client: heylookllm HTTP / its engine in-process",
            single_rate(hey_mlx),
            single_rate(get(model, "mlx", "inprocess-heylookllm")),
            None,
        )
    return out


# --- text tables -----------------------------------------------------------------------------------------------
def _fmt(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _table(headers: list[str], rows: list[list[str]], align_left: int = 1) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < align_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def figures_table(runs: list[Run], levels: list[int]) -> str:
    headers = ["model", "format", "runner", "tokens", "1 client tok/s", "TTFT ms", "server CPU us/tok"]
    headers += [f"{n} cl. total tok/s" for n in levels]
    headers += ["turn-5 TTFT ms", "turn-5 cached", "status"]
    rows = []
    order = {name: i for i, name in enumerate(RUNNER_ORDER)}
    for run in sorted(runs, key=lambda r: (r["model"] != "tiny", r["format"], order.get(r["runner"], 99))):
        ok = run["status"] == "ok"
        cached = (run.get("turn_cached_tokens") or [None])[-1]
        prompt = (run.get("turn_prompt_tokens") or [None])[-1]
        status = "ok" if ok else f"FAILED: {run.get('error', '')}"[:100]
        if ok and run.get("noisy"):
            status = f"noisy (others {run['other_cores_max']:.2f} cores)"
        rows.append(
            [
                run["model"],
                run["format"],
                run["runner"],
                str(run.get("max_tokens", "-")),
                _fmt(single_rate(run)),
                _fmt(single_ttft(run), 1000.0, 1),
                _fmt((run.get("single") or {}).get("server_cpu_us_per_token")),
                *(_fmt(level_rate(run, n)) for n in levels),
                _fmt(last_turn_ttft(run), 1000.0, 1),
                "-" if cached is None else f"{cached}/{prompt}",
                status,
            ]
        )
    return _table(headers, rows, align_left=3)


def llama_server_table(runs: list[Run], models: list[str], levels: list[int]) -> str:
    """The headline: heylookllm against llama.cpp's own server, with the Python peer beside it."""
    headers = ["model", "figure", "heylookllm", "llama-server", "ratio", "llama_cpp.server", "ratio"]
    rows = []
    for model in models:
        hey = find(runs, model, "gguf", "heylookllm")
        native = find(runs, model, "gguf", "llama-server")
        python_peer = find(runs, model, "gguf", "llama_cpp.server")
        if hey is None or native is None:
            continue
        figures: list[tuple[str, Any, bool]] = [
            (f"{n} cl. tok/s", lambda r, n=n: level_rate(r, n), False) for n in levels if n in LLAMA_SERVER_LEVELS
        ]
        figures += [
            (f"TTFT {w} @{TTFT_CLIENTS} ms", lambda r, w=w: level_ttft(r, TTFT_CLIENTS, w), True)
            for w in ("p50", "p99")
        ]
        figures.append(("long prompt ms", long_prompt_ttft, True))
        for label, get_value, is_time in figures:
            a, b, c = get_value(hey), get_value(native), get_value(python_peer)
            if a is None and b is None:
                continue  # not measured in this run (a level left out)
            scale = 1000.0 if is_time else 1.0
            digits = 1 if is_time else 0
            # Ratios read "heylookllm is N x as good": rates a / b, times b / a.
            ratio_native = _ratio(b, a) if is_time else _ratio(a, b)
            ratio_python = _ratio(c, a) if is_time else _ratio(a, c)
            rows.append(
                [
                    model,
                    label,
                    _fmt(a, scale, digits),
                    _fmt(b, scale, digits),
                    "-" if ratio_native is None else f"{ratio_native:.2f}x",
                    _fmt(c, scale, digits),
                    "-" if ratio_python is None else f"{ratio_python:.2f}x",
                ]
            )
    if not rows:
        return "(no llama-server runs: build it with benchmarks/build_llama_server.py)"
    return "heylookllm against llama.cpp's llama-server (ratio > 1: heylookllm better)\n" + _table(
        headers, rows, align_left=2
    )


def checks_table(items: list[Check]) -> str:
    rows = []
    for c in items:
        target = "-" if c.target is None else f"{'<=' if c.at_most else '>='} {c.target:g}x"
        rows.append([c.label, "-" if c.value is None else f"{c.value:.3f}x", target, c.verdict])
    return _table(["ratio", "value", "target", "result"], rows)


# --- chart -----------------------------------------------------------------------------------------------------
RUNNER_COLORS = {
    "heylookllm": "tab:blue",
    "heylookllm-nocache": "lightsteelblue",
    "inprocess-heylookllm": "navy",
    "llama-server": "tab:red",
    "llama_cpp.server": "tab:orange",
    "inprocess-llama-cpp-python": "saddlebrown",
    "mlx_lm.server": "tab:green",
}


def _label(run: Run) -> str:
    return f"{run['runner']} ({run['format']})"


def write_chart(runs: list[Run], models: list[str], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 3, figsize=(17, 4.8 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        model_runs = [r for r in runs if r["model"] == model and r["status"] == "ok"]
        rated = [r for r in model_runs if single_rate(r)]
        _bars(
            axes[row][0], rated, [single_rate(r) or 0.0 for r in rated], f"{model}: 1 client, tok/s (higher is better)"
        )
        ax = axes[row][1]
        for run in model_runs:
            points = [(n, level_rate(run, n)) for n in levels]
            shown = [(n, v) for n, v in points if v is not None]
            if shown:
                ax.plot(
                    [n for n, _ in shown],
                    [v for _, v in shown],
                    marker="o",
                    linestyle="--" if run["format"] == "mlx" else "-",
                    color=RUNNER_COLORS.get(run["runner"], "gray"),
                    label=_label(run),
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_title(f"{model}: total tok/s over all clients", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        chat = [r for r in model_runs if last_turn_ttft(r) is not None]
        _bars(
            axes[row][2],
            chat,
            [(last_turn_ttft(r) or 0.0) * 1000.0 for r in chat],
            f"{model}: turn-5 TTFT, ms (lower is better)",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, runs: list[Run], values: list[float], title: str) -> None:
    ax.set_title(title, fontsize=10)
    if not values:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    colors = [RUNNER_COLORS.get(r["runner"], "gray") for r in runs]
    bars = ax.bar(range(len(values)), values, color=colors, edgecolor="white")
    for bar, run in zip(bars, runs, strict=True):
        if run["format"] == "mlx":
            bar.set_hatch("//")
    ax.set_xticks(
        range(len(values)), [_label(r).replace(" (", "\n(") for r in runs], fontsize=7, rotation=30, ha="right"
    )
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
        )
    ax.grid(axis="y", alpha=0.3)
