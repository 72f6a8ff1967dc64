"""What a loaded llama.cpp model says about itself and its vocabulary: metadata, special and fill-in-the-middle
tokens, tokenizing, and token pieces (cached per token). A base of LlamaEngine, which sets the pointers at load."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp


def tokenize_with(vocab: Any, text: str, *, add_bos: bool, special: bool) -> list[int]:
    """`text`'s token ids in llama.cpp's vocabulary `vocab` (a second call when the first buffer was too small)."""
    data = text.encode("utf-8")
    capacity = len(data) + 8
    buf = (llama_cpp.llama_token * capacity)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, capacity, add_bos, special)
    if n < 0:
        capacity = -n
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, capacity, add_bos, special)
    return list(buf[:n])


class LlamaVocabulary:
    """The model-facing half of LlamaEngine; the engine's `load` sets these attributes."""

    _model: Any
    _vocab: Any
    n_vocab: int
    _pieces: dict[int, bytes]
    _special_pieces: dict[int, bytes]

    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1 << 16)
        for i in range(int(llama_cpp.llama_model_meta_count(self._model))):
            n = llama_cpp.llama_model_meta_key_by_index(self._model, i, buf, len(buf))
            if n < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            n = llama_cpp.llama_model_meta_val_str_by_index(self._model, i, buf, len(buf))
            if n >= 0:
                out[key] = buf.value.decode("utf-8", "replace")
        return out

    def special_tokens(self) -> dict[str, int]:
        """Texts of control tokens and of user-defined tokens written like them (`<...>`, `[...]`), as llguidance
        treats them."""
        found: dict[str, int] = {}
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        user = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        for token in range(self.n_vocab):
            attr = int(llama_cpp.llama_vocab_get_attr(self._vocab, token))
            if attr & (control | user):
                text = self.token_text(token)
                if attr & control or (text.startswith("<") and text.endswith(">")):
                    found[text] = token
        return found

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def fim_token(self, which: str) -> int:
        """The fill-in-the-middle token `pre`, `suf` or `mid`; -1 when the model has none."""
        getter = {"pre": llama_cpp.llama_vocab_fim_pre, "suf": llama_cpp.llama_vocab_fim_suf}.get(
            which, llama_cpp.llama_vocab_fim_mid
        )
        return int(getter(self._vocab))

    @property
    def vocab(self) -> Any:
        """The model's llama_vocab pointer (for tokenizers built on it, such as the grammar engine's)."""
        return self._vocab

    @property
    def bos_id(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    @property
    def eos_id(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self._vocab))

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return tokenize_with(self._vocab, text, add_bos=add_bos, special=special)

    def piece(self, token: int) -> bytes:
        """The token's bytes in output text (control tokens are empty, as llama.cpp renders them)."""
        cached = self._pieces.get(token)
        return cached if cached is not None else self._cache_piece(self._pieces, token, special=False)

    def special_piece(self, token: int) -> bytes:
        """The token's bytes with control tokens as their text (`<|im_end|>`): for markers and logprobs."""
        cached = self._special_pieces.get(token)
        return cached if cached is not None else self._cache_piece(self._special_pieces, token, special=True)

    def _cache_piece(self, cache: dict[int, bytes], token: int, *, special: bool) -> bytes:
        piece = cache[token] = self._token_to_piece(token, special=special)
        return piece

    def _token_to_piece(self, token: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]
