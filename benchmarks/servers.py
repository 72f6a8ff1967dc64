"""Server processes for the benchmark: heylookllm, llama.cpp's llama-server, llama-cpp-python's server and
mlx-lm's server.

Each runs as a child process on a free port of 127.0.0.1, in its own process group, with its output in a log
file. `running_server` always stops the process (and anything it started) when the block ends, also on errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.models import BENCH_CONTEXT, BenchModel

DEFAULT_THREADS = max(1, (os.cpu_count() or 2) // 2)
"""llama.cpp threads for one-token steps in every GGUF runner (heylookllm, llama_cpp.server, in-process):
llama-cpp-python's own default, half the cores. On a small shared machine, threads that wait for each other at
every step stall badly when another program takes a core; half the cores also leaves room for the HTTP loop and
the client."""
DEFAULT_BATCH_THREADS = os.cpu_count() or 2
"""llama.cpp threads for steps of several tokens (prompts, several sequences at once): llama-cpp-python's default,
all cores. heylookllm gets it as `n_threads_batch` where its config has that key."""


def heylook_has_batch_threads() -> bool:
    from heylook_llm.config.registry import LlamaCppConfig

    return "n_threads_batch" in LlamaCppConfig.model_fields


@dataclass(frozen=True, slots=True)
class ServerSpec:
    runner: str
    """Short name used in results and --only: heylookllm, heylookllm-nocache, llama_cpp.server, mlx_lm.server."""
    command: list[str]
    ready_path: str
    request_model: str
    """The `model` field requests carry."""
    startup_timeout_s: float = 180.0


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class RunningServer:
    spec: ServerSpec
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def running_server(spec: ServerSpec, log_path: Path) -> Iterator[RunningServer]:
    """Start the server, wait until `ready_path` answers 200, yield it, and stop it whatever happens."""
    port = free_port()
    command = [*spec.command, "--host", "127.0.0.1", "--port", str(port)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            server = RunningServer(spec, f"http://127.0.0.1:{port}", log_path, process)
            _wait_ready(server)
            yield server
        finally:
            _stop(process)


def _wait_ready(server: RunningServer) -> None:
    deadline = time.monotonic() + server.spec.startup_timeout_s
    url = server.base_url + server.spec.ready_path
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise ServerStartError(
                f"{server.spec.runner} exited with status {code} before answering; see {server.log_path}"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServerStartError(
        f"{server.spec.runner} did not answer {server.spec.ready_path} within {server.spec.startup_timeout_s:.0f}s;"
        f" see {server.log_path}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group, SIGKILL after 15 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- heylookllm --------------------------------------------------------------------------------------------
HEYLOOK_GGUF_ID = "bench-gguf"
HEYLOOK_MLX_ID = "bench-mlx"


def heylook_config(
    model: BenchModel, folder: Path, *, prefix_cache: bool, parallel: int, threads: int, batch_threads: int
) -> Path:
    """A models.yaml serving the model's GGUF file and MLX folder; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    batch_line = f"\n      n_threads_batch: {batch_threads}" if heylook_has_batch_threads() else ""
    text = f"""\
# Written by benchmarks/run.py for one benchmark run.
default_model: {HEYLOOK_GGUF_ID}
max_loaded_models: 1
models:
  - id: {HEYLOOK_GGUF_ID}
    provider: llama_cpp
    config:
      model_path: {model.gguf_path.resolve()}
      n_ctx: {BENCH_CONTEXT}
      n_threads: {threads}{batch_line}
      parallel: {parallel}
      prefix_cache: {"true" if prefix_cache else "false"}
"""
    if model.mlx_dir is not None:
        text += f"""\
  - id: {HEYLOOK_MLX_ID}
    provider: mlx
    config:
      model_path: {model.mlx_dir.resolve()}
      parallel: {parallel}
"""
    suffix = "cache-on" if prefix_cache else "cache-off"
    path = folder / f"models-{model.name}-{suffix}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def heylook_spec(config: Path, model_id: str, runner: str) -> ServerSpec:
    command = [sys.executable, "-m", "heylook_llm", "--config", str(config), "--model-id", model_id]
    return ServerSpec(runner, command, "/health", model_id)


def llama_cpp_server_spec(model: BenchModel, threads: int, batch_threads: int) -> ServerSpec:
    # --interrupt_requests False: by default a new request ends the stream being generated, so concurrent
    # clients would get cut-off answers; with it off, requests wait for each other and all get their tokens.
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model.gguf_path.resolve()),
        "--n_ctx",
        str(BENCH_CONTEXT),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(batch_threads),
        "--interrupt_requests",
        "False",
    ]
    return ServerSpec("llama_cpp.server", command, "/v1/models", "default")


def llama_server_spec(model: BenchModel, threads: int, batch_threads: int, parallel: int) -> ServerSpec:
    """llama.cpp's own server, built by benchmarks/build_llama_server.py from the installed llama-cpp-python's
    sdist: the same slots, context per slot and threads as heylookllm; everything else its defaults."""
    from benchmarks.build_llama_server import server_binary

    binary = server_binary()
    if binary is None:
        raise ServerStartError("llama-server is not built: run .venv/bin/python benchmarks/build_llama_server.py")
    command = [
        str(binary),
        "--model",
        str(model.gguf_path.resolve()),
        # -c is the whole KV cache, shared out among the -np slots: the same per-slot context as heylookllm.
        "--ctx-size",
        str(BENCH_CONTEXT * parallel),
        "--parallel",
        str(parallel),
        "--threads",
        str(threads),
        "--threads-batch",
        str(batch_threads),
        "--no-webui",
    ]
    return ServerSpec("llama-server", command, "/health", "default")


def mlx_lm_server_spec(model: BenchModel) -> ServerSpec:
    assert model.mlx_dir is not None
    command = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model.mlx_dir.resolve())]
    return ServerSpec("mlx_lm.server", command, "/health", "default_model")
