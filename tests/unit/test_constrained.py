"""Constrained decoding (llguidance) on the demo tokenizer, without a model: random walks through the allowed
tokens always spell valid output, failures end one sequence cleanly, and what cannot be enforced is refused."""

from __future__ import annotations

import json
import random
import re

import jsonschema
import mlx.core as mx
import numpy as np
import pytest
from llguidance import LLTokenizer

from heylook_llm.backends.constrained import GrammarCache, TokenMask, grammar_text
from heylook_llm.backends.mlx_grammar import GrammarProcessor
from heylook_llm.demo import ModelShape, train_tokenizer
from heylook_llm.errors import GenerationFailed, InvalidRequest
from heylook_llm.types import GrammarSpec

pytestmark = pytest.mark.unit

VOCAB = ModelShape().vocab
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "n": {"type": "integer", "minimum": -5, "maximum": 5},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["name", "n", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def cache() -> GrammarCache:
    trained = train_tokenizer(VOCAB)
    return GrammarCache(LLTokenizer(trained.tokenizer_json, n_vocab=VOCAB))


def _walk(mask: TokenMask, tokenizer: LLTokenizer, seed: int, limit: int = 400) -> str:
    """Random allowed tokens until the grammar finishes or end-of-sequence is drawn; "" when `limit` cuts it."""
    rng = random.Random(seed)
    out: list[int] = []
    for _ in range(limit):
        logits = np.zeros(VOCAB, dtype=np.float32)
        mask.apply(logits)
        allowed = np.flatnonzero(np.isfinite(logits)).tolist()
        token = rng.choice(allowed)
        if token == tokenizer.eos_token:
            break
        mask.accept(token)
        out.append(token)
        if mask.finished:
            break
    else:
        return ""
    return tokenizer.decode_str(out)


def test_random_walks_through_a_schema_are_always_valid(cache: GrammarCache) -> None:
    grammar = grammar_text(SCHEMA, None)
    assert grammar is not None
    finished = 0
    for seed in range(25):
        text = _walk(TokenMask(cache.matcher(grammar, "response_format"), VOCAB), cache.tokenizer, seed)
        if text:
            jsonschema.validate(json.loads(text), SCHEMA)
            finished += 1
    assert finished >= 20


def test_json_object_regex_and_grammars(cache: GrammarCache) -> None:
    cases = [
        # An open-ended object rarely ends by chance: only walks that end are checked.
        (grammar_text("json", None), lambda t: t == "" or isinstance(json.loads(t), dict)),
        (grammar_text(None, GrammarSpec("regex", "[0-9]{2}x", "regex")), lambda t: re.fullmatch("[0-9]{2}x", t)),
        (grammar_text(None, GrammarSpec("grammar", 'root ::= "yes" | "no"')), lambda t: t in {"yes", "no"}),
        (grammar_text(None, GrammarSpec("grammar", 'start: "up" | "down"')), lambda t: t in {"up", "down"}),
    ]
    for grammar, check in cases:
        assert grammar is not None
        for seed in range(5):
            assert check(_walk(TokenMask(cache.matcher(grammar, "x"), VOCAB), cache.tokenizer, seed))


def test_what_cannot_be_enforced_is_refused_by_name(cache: GrammarCache) -> None:
    unsupported = grammar_text({"type": "object", "unevaluatedProperties": False}, None)
    assert unsupported is not None
    with pytest.raises(InvalidRequest, match="unevaluatedProperties") as err:
        cache.matcher(unsupported, "response_format")
    assert err.value.param == "response_format"
    bad_regex = grammar_text(None, GrammarSpec("regex", "(open", "regex"))
    assert bad_regex is not None
    with pytest.raises(InvalidRequest) as regex_err:
        cache.matcher(bad_regex, "regex")
    assert regex_err.value.param == "regex"
    assert grammar_text(None, None) is None


def test_cached_matchers_are_independent_copies(cache: GrammarCache) -> None:
    grammar = grammar_text(None, GrammarSpec("regex", "ab", "regex"))
    assert grammar is not None
    first, second = TokenMask(cache.matcher(grammar, "regex"), VOCAB), TokenMask(cache.matcher(grammar, "regex"), VOCAB)
    a = cache.tokenizer.tokenize_str("a")[0]
    first.accept(a)
    assert not np.array_equal(first.allowed(), second.allowed())


def test_a_rejected_token_fails_the_sequence_not_the_process(cache: GrammarCache) -> None:
    grammar = grammar_text(None, GrammarSpec("regex", "a+", "regex"))
    assert grammar is not None
    mask = TokenMask(cache.matcher(grammar, "regex"), VOCAB)
    b = cache.tokenizer.tokenize_str("b")[0]
    with pytest.raises(GenerationFailed):
        mask.accept(b)


def test_the_mlx_processor_masks_and_reports_failure_instead_of_raising(cache: GrammarCache) -> None:
    grammar = grammar_text(None, GrammarSpec("regex", "a+", "regex"))
    assert grammar is not None
    end = cache.tokenizer.eos_token
    processor = GrammarProcessor(TokenMask(cache.matcher(grammar, "regex"), VOCAB), end, VOCAB)
    prompt = mx.array([5, 6, 7])
    first = np.array(processor(prompt, mx.zeros((1, VOCAB))))
    a = cache.tokenizer.tokenize_str("a")[0]
    assert np.isfinite(first[0, a]) and np.isinf(first).sum() > VOCAB // 2
    b = cache.tokenizer.tokenize_str("b")[0]
    after_bad = np.array(processor(mx.array([5, 6, 7, b]), mx.zeros((1, VOCAB))))
    assert processor.failed is not None
    # Only end-of-sequence is left, so the sequence ends; the backend reports `failed` for it alone.
    assert np.flatnonzero(np.isfinite(after_bad[0])).tolist() == [end]
