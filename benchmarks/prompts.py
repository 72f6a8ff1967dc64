"""Prompts for the multi-turn benchmark: a long system prompt of an exact token count, and short user turns."""

from __future__ import annotations

import random
from pathlib import Path

_VOCABULARY = (
    "server client request token stream cache batch prompt model answer question thread queue slot worker "
    "local machine memory window context reply chat turn system user assistant sampling greedy length limit "
    "route load swap keep evict measure time rate first last every each several many small large quick slow "
    "the a an of to in on at for with from by and or but when while as if so then"
).split()

USER_TURNS = [
    "What does the server do first when a request arrives?",
    "And how does it decide which model runs it?",
    "What happens to the tokens it has already read?",
    "How many clients can it answer at once?",
    "Sum up the whole path of one request in two sentences.",
]


def system_prompt(tokenizer_json: Path | None, tokens: int, seed: int, gguf_path: Path | None = None) -> str:
    """Text of made-up sentences that the model's tokenizer reads as exactly `tokens` tokens (give or take one
    at the cut); `seed` makes conversations differ from their first token on. Without `tokenizer_json` the text
    is cut with llama.cpp's tokenizer of `gguf_path` (a real GGUF model)."""
    rng = random.Random(seed)
    sentences = [f"Conversation {seed}."]
    # Byte-level BPE on this vocabulary reads about one token per word or less: twice the words is plenty.
    while sum(len(s.split()) for s in sentences) < tokens * 2:
        words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(6, 14))]
        sentences.append(" ".join(words).capitalize() + ".")
    text = " ".join(sentences)
    if tokenizer_json is None:
        if gguf_path is None:
            raise ValueError("system_prompt needs a tokenizer.json or a GGUF file")
        return _cut_with_gguf(text, tokens, gguf_path)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    encoding = tokenizer.encode(text, add_special_tokens=False)
    if len(encoding.ids) <= tokens:
        return text
    end = encoding.offsets[tokens - 1][1]
    return text[:end]


def _cut_with_gguf(text: str, tokens: int, gguf_path: Path) -> str:
    """The longest prefix of `text` (cut at a word) of at most `tokens` tokens, found by bisection on words."""
    from benchmarks.models import VocabOnly

    words = text.split(" ")
    with VocabOnly(gguf_path) as vocab:
        low, high = 1, len(words)
        while low < high:
            middle = (low + high + 1) // 2
            if vocab.count(" ".join(words[:middle])) <= tokens:
                low = middle
            else:
                high = middle - 1
    return " ".join(words[:low])
