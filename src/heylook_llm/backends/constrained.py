"""Constrained decoding shared by every backend, through llguidance (the engine inside llama.cpp's optional build,
vLLM and SGLang): JSON, JSON schema, Lark or GBNF grammars and regexes become one grammar language, and each
sequence gets a matcher that masks the logits of every token the grammar does not allow next.

A schema keyword llguidance cannot enforce is refused (`lenient` stays off), never relaxed. Each backend builds
one `LLTokenizer` for its vocabulary (once, on the worker thread) and calls `TokenMask.apply` on a sequence's
logits before its sampler, then `TokenMask.accept` with the sampled token.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import llguidance
import numpy as np
import numpy.typing as npt
import orjson
from llguidance import LLMatcher, LLTokenizer

from heylook_llm.errors import GenerationFailed, InvalidRequest
from heylook_llm.types import GrammarSpec, ResponseFormat

JSON_OPTIONS: dict[str, Any] = {
    # Between JSON tokens: nothing, one space, or a newline and an indent of up to 8 spaces. Unbounded whitespace
    # lets a small model fill max_tokens with it; deeper pretty-printing becomes shallower, still valid JSON.
    "whitespace_pattern": r"(?:\x20?|\x0A\x20{0,8})",
}
"""llguidance's JSON compile options for every schema (it refuses unknown keywords by default)."""

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def grammar_text(response_format: ResponseFormat | None, grammar: GrammarSpec | None) -> str | None:
    """The llguidance grammar for a request's output constraint (None: unconstrained); a malformed constraint is
    an InvalidRequest naming its field."""
    if grammar is not None:
        try:
            if grammar.syntax == "regex":
                return LLMatcher.grammar_from_regex(grammar.text)
            return llguidance.grammar_from("grammar", grammar.text)  # Lark, or GBNF converted to Lark
        except ValueError as exc:
            raise InvalidRequest(f"{grammar.syntax}: {exc}", param=grammar.param) from exc
    if response_format is None:
        return None
    schema = ANY_JSON_OBJECT if response_format == "json" else response_format
    try:
        return LLMatcher.grammar_from_json_schema(orjson.dumps(schema).decode(), overrides=JSON_OPTIONS)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidRequest(
            f"response_format: the JSON schema is not valid JSON: {exc}", param="response_format"
        ) from exc


class GrammarCache:
    """Compiled matchers by grammar text, per tokenizer: a repeated schema costs a copy, not a compile."""

    def __init__(self, tokenizer: LLTokenizer, size: int = 64) -> None:
        self.tokenizer = tokenizer
        self._size = size
        self._matchers: OrderedDict[str, LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def matcher(self, grammar: str, param: str) -> LLMatcher:
        """A fresh matcher for `grammar`; a grammar llguidance cannot enforce is an InvalidRequest naming `param`
        and llguidance's reason (the unknown keyword, the bad regex)."""
        with self._lock:
            cached = self._matchers.get(grammar)
            if cached is not None:
                self._matchers.move_to_end(grammar)
                return cached.deep_copy()
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            raise InvalidRequest(f"{param}: this constraint cannot be enforced: {messages[0]}", param=param)
        compiled = LLMatcher(self.tokenizer, grammar, log_level=0)
        if compiled.is_error():
            raise InvalidRequest(f"{param}: this constraint cannot be enforced: {compiled.get_error()}", param=param)
        with self._lock:
            self._matchers[grammar] = compiled
            while len(self._matchers) > self._size:
                self._matchers.popitem(last=False)
        return compiled.deep_copy()


class TokenMask:
    """One sequence's grammar state: which tokens may come next, advanced by each sampled token."""

    def __init__(self, matcher: LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._words: npt.NDArray[np.int32] = np.full((n_vocab + 31) // 32, -1, dtype=np.int32)

    def allowed(self) -> npt.NDArray[np.bool_]:
        """A boolean array over the vocabulary: True where the token may come next."""
        self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if self._matcher.is_error():
            raise GenerationFailed(f"the output constraint failed: {self._matcher.get_error()}")
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")[: self._n_vocab]
        return bits.astype(np.bool_)

    def apply(self, logits: npt.NDArray[np.float32]) -> None:
        """Set the logits of every token the grammar forbids to -inf, in place; a state with no allowed token (or
        only tokens whose logits are not finite) ends the sequence with an error, not a crash."""
        allowed = self.allowed()
        width = min(len(logits), self._n_vocab)
        logits[:width][~allowed[:width]] = -np.inf
        if len(logits) > width:
            logits[width:] = -np.inf
        if not np.isfinite(logits[:width][allowed[:width]]).any():
            raise GenerationFailed("the output constraint allows no token here; the sequence cannot go on")

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GenerationFailed(f"the output constraint rejected a sampled token: {self._matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar is complete and allows nothing more (only end-of-sequence)."""
        return bool(self._matcher.is_stopped())
