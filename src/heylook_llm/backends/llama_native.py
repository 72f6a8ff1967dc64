"""llama.cpp's native log: forwarded to our logging (warnings and errors only, unless debugging), and captured
per thread while a model loads, because its C API returns NULL on failure and says why only in its log."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from typing import Any

import llama_cpp

_native_log = logging.getLogger("heylook_llm.llama_cpp.native")
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continuation lines, such as progress dots).
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


_GGML_ERROR = 4
_capture = threading.local()
"""Per thread: the list that collects llama.cpp's error lines while `native_errors()` is open (loads run on the
model's worker thread, and llama.cpp logs on the thread that called it)."""


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp prints hundreds of lines per load on stderr; keep its warnings and errors, in our log.
    py_level = _GGML_LEVELS.get(level, logging.DEBUG)
    errors: list[str] | None = getattr(_capture, "errors", None)
    if errors is not None and level == _GGML_ERROR:
        errors.append(text.decode("utf-8", "replace").strip())
    if _native_log.isEnabledFor(py_level):
        message = text.decode("utf-8", "replace").rstrip()
        if message:
            _native_log.log(py_level, "%s", message)


@contextlib.contextmanager
def native_errors() -> Iterator[list[str]]:
    """Collect the error lines llama.cpp logs on this thread meanwhile: its C API returns NULL on failure and says
    why only in its log."""
    init_backend()
    errors: list[str] = []
    _capture.errors = errors
    try:
        yield errors
    finally:
        _capture.errors = None


def native_reason(errors: list[str], default: str) -> str:
    """llama.cpp's own words for a failure: its distinct error lines without their function-name prefixes, most
    specific first (the last line is the generic "failed to load model")."""
    reasons: list[str] = []
    for line in errors:
        reason = line.strip()
        # "llama_model_load: error loading model: llama_model_loader: ..." -> drop the C function names.
        while True:
            head, sep, rest = reason.partition(": ")
            if not sep or not (head.replace("_", "").isalnum() or head == "error loading model"):
                break
            reason = rest.strip()
        if reason and reason not in reasons:
            reasons.append(reason)
    specific = [r for r in reasons if r != "failed to load model"]
    return "; ".join(specific or reasons) or default


_backend_ready = False


def init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_forward_native_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True
        # llama.cpp's INFO lines are a load report, not news: only DEBUG shows them.
        if not _native_log.isEnabledFor(logging.DEBUG):
            _native_log.setLevel(logging.WARNING)


def free_native(batch: Any, ctx: Any, model: Any) -> None:
    """Free what one llama.cpp model holds, batch and context before the model they belong to (each may be None)."""
    if batch is not None:
        llama_cpp.llama_batch_free(batch)
    if ctx:
        llama_cpp.llama_free(ctx)
    if model:
        llama_cpp.llama_model_free(model)


def model_params(n_gpu_layers: int, use_mmap: bool) -> Any:
    """llama.cpp's model parameters with the layers to offload and whether to map the file.

    Newer llama.cpp replaced the `use_mmap` flag with `load_mode`; setting `use_mmap` on those builds' parameters
    sets an attribute llama.cpp never reads, so `use_mmap: false` would be ignored. Mapping (the default) is
    llama.cpp's AUTO mode: mapped unless a device cannot use mapped memory."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    fields = {name for name, *_ in params._fields_}
    if "load_mode" in fields:
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_AUTO if use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    else:
        params.use_mmap = use_mmap
    return params
