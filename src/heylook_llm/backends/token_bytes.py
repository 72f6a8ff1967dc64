"""The bytes each token of a Hugging Face tokenizer stands for, so that text can be assembled token by token.

Decoding one token at a time with the tokenizer's `decode` loses information (a token holding half a UTF-8
character decodes to U+FFFD, SentencePiece drops leading spaces), so for the two decoder families almost every
model uses, byte-level BPE and SentencePiece with byte fallback, we build a table `token id -> bytes` once at
load and look tokens up while generating. Special tokens map to no bytes, as llama.cpp renders them.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

SPM_SPACE = "\u2581"


@cache
def _byte_level_chars() -> dict[str, int]:
    """The printable stand-ins byte-level BPE (GPT-2) uses for bytes: character -> byte value.

    Bytes that print as themselves keep their character; every other byte, in increasing order, takes the
    next code point from 256 up.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            chars[chr(256 + shifted)] = b
            shifted += 1
    return chars


def _byte_level_bytes(token: str) -> bytes:
    chars = _byte_level_chars()
    out = bytearray()
    for ch in token:
        value = chars.get(ch)
        if value is None:
            out += ch.encode("utf-8")
        else:
            out.append(value)
    return bytes(out)


def _spm_bytes(token: str) -> bytes:
    # Byte-fallback tokens are written `<0x0A>`; everything else is text with U+2581 for spaces.
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace(SPM_SPACE, " ").encode("utf-8")


def decoder_kind(decoder: dict[str, Any] | None) -> str | None:
    """'byte_level', 'spm' or None (a decoder we have no table for) from a tokenizer.json decoder spec."""
    if not decoder:
        return None
    kind = decoder.get("type")
    if kind == "ByteLevel":
        return "byte_level"
    if kind == "Metaspace":
        return "spm"
    if kind == "Sequence":
        parts = decoder.get("decoders") or []
        types = {p.get("type") for p in parts}
        if "ByteLevel" in types:
            return "byte_level"
        replaces_space = any(
            p.get("type") == "Replace" and (p.get("pattern") or {}).get("String") == SPM_SPACE for p in parts
        )
        if replaces_space or "Metaspace" in types:
            return "spm"
    return None


def token_byte_table(tokenizer: Any) -> list[bytes] | None:
    """`table[token_id]` is the token's bytes; None when the tokenizer's decoder is not one we can tabulate.

    `tokenizer` is a transformers fast tokenizer (what mlx-lm loads).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return None
    try:
        spec = json.loads(backend.decoder.__getstate__())
    except (TypeError, ValueError, AttributeError):
        return None
    kind = decoder_kind(spec)
    if kind is None:
        log.info("tokenizer decoder %s has no byte table; decoding through the streaming detokenizer", spec)
        return None
    to_bytes = _byte_level_bytes if kind == "byte_level" else _spm_bytes
    size = len(tokenizer)
    pieces: list[str | None] = tokenizer.convert_ids_to_tokens(list(range(size)))
    table = [to_bytes(p) if p is not None else b"" for p in pieces]
    # Added tokens are stored as plain text, not in the model's byte alphabet.
    for token_id, added in tokenizer.added_tokens_decoder.items():
        if 0 <= token_id < size:
            table[token_id] = b"" if added.special else str(added.content).encode("utf-8")
    return table
