"""heylookllm: a local LLM server speaking the OpenAI and Ollama APIs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("heylookllm")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
