"""Token byte tables: every token's bytes, so text is assembled exactly as llama.cpp does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders
from tokenizers.implementations import SentencePieceBPETokenizer
from transformers import PreTrainedTokenizerFast

from heylook_llm.backends.mlx_support import TokenDecoder
from heylook_llm.backends.text import Utf8Assembler
from heylook_llm.backends.token_bytes import decoder_kind, token_byte_table
from heylook_llm.demo import SPECIAL_TOKENS, ModelShape, train_tokenizer

pytestmark = pytest.mark.unit

SAMPLE = "Hello wörld, 世界 🦊 tabs\tand\nnew lines  double  spaces"


@pytest.fixture(scope="module")
def demo_tokenizer() -> Any:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(train_tokenizer(ModelShape().vocab).tokenizer_json),
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )


def test_byte_level_table_reassembles_any_text(demo_tokenizer: Any) -> None:
    table = token_byte_table(demo_tokenizer)
    assert table is not None and len(table) == len(demo_tokenizer)
    ids = demo_tokenizer.encode(SAMPLE, add_special_tokens=False)
    assert b"".join(table[t] for t in ids).decode("utf-8") == SAMPLE


def test_pieces_through_the_assembler_never_split_a_character(demo_tokenizer: Any) -> None:
    table = token_byte_table(demo_tokenizer)
    assert table is not None
    ids = demo_tokenizer.encode("🦊🦊世界", add_special_tokens=False)
    assembler = Utf8Assembler()
    pieces = [assembler.feed(table[t]) for t in ids]
    assert "".join(pieces) == "🦊🦊世界"
    assert all("\ufffd" not in p for p in pieces)


def test_special_tokens_have_no_bytes(demo_tokenizer: Any) -> None:
    table = token_byte_table(demo_tokenizer)
    assert table is not None
    for token in SPECIAL_TOKENS:
        assert table[demo_tokenizer.convert_tokens_to_ids(token)] == b""


def test_sentencepiece_table_turns_the_space_marker_into_spaces() -> None:
    spm = SentencePieceBPETokenizer()
    spm.train_from_iterator([SAMPLE, "the quick brown fox jumps over the lazy dog"] * 20, vocab_size=120)
    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(spm.to_str()))
    table = token_byte_table(hf)
    assert table is not None
    text = "the quick fox"
    ids = hf.encode(text, add_special_tokens=False)
    # SentencePiece marks the start of the text as a space too; decode() strips it, generation keeps it.
    assert b"".join(table[t] for t in ids).decode("utf-8") == " " + text


@pytest.mark.parametrize(
    ("decoder", "kind"),
    [
        (decoders.ByteLevel(), "byte_level"),
        (decoders.Metaspace(), "spm"),
        (
            decoders.Sequence(
                [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
            ),
            "spm",
        ),
        (decoders.WordPiece(), None),
    ],
)
def test_decoder_kinds(decoder: Any, kind: str | None) -> None:
    assert decoder_kind(json.loads(decoder.__getstate__())) == kind


def test_decoder_without_a_table_uses_the_streaming_detokenizer() -> None:
    from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer, TokenizerWrapper

    wp = Tokenizer.from_str(train_tokenizer(ModelShape().vocab).tokenizer_json)
    wp.decoder = decoders.WordPiece()  # a decoder family with no byte table
    hf = PreTrainedTokenizerFast(tokenizer_object=wp)
    assert token_byte_table(hf) is None
    wrapper = TokenizerWrapper(hf, NaiveStreamingDetokenizer)
    ids = hf.encode("hello world\nagain", add_special_tokens=False)
    decoder = TokenDecoder(None, wrapper)
    out = b"".join(decoder.feed(t) for t in ids) + decoder.flush()
    assert out.decode("utf-8") == hf.decode(ids)
