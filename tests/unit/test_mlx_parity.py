"""demo-mlx and demo-gguf are one model: the same float32 weights give the same next-token scores.

Compared with teacher forcing: both score the same sequence (llama.cpp's greedy continuation), position by
position. llama.cpp keeps its KV cache in float16, so scores differ by a few thousandths; greedy text is
therefore the same on both backends except where two tokens are within that distance of each other.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from llama_cpp import Llama
from mlx_lm.utils import load

from heylook_llm.demo import DEMO_MLX_DIR

pytestmark = pytest.mark.unit

PROMPTS = [
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",  # a near tie at its first token
    "<|im_start|>user\nCompare the two backends, please<|im_end|>\n<|im_start|>assistant\n",
    "The router keeps a few models loaded",
]
GENERATED = 96
SCORE_TOLERANCE = 0.02


@pytest.mark.parametrize("prompt", PROMPTS)
def test_both_backends_score_every_position_alike(demo_dir: Path, prompt: str) -> None:
    gguf = Llama(str(demo_dir / "demo-gguf.gguf"), n_ctx=512, logits_all=True, verbose=False)
    try:
        tokens = gguf.tokenize(prompt.encode(), add_bos=False, special=True)
        continuation: list[int] = []
        for token in gguf.generate(tokens, temp=0.0, reset=True):
            continuation.append(token)
            if len(continuation) == GENERATED:
                break
        sequence = tokens + continuation
        gguf_scores = np.array(gguf.scores[: len(sequence) - 1])
    finally:
        gguf.close()
    model, tokenizer = load(str(demo_dir / DEMO_MLX_DIR))[:2]
    assert tokenizer.encode(prompt, add_special_tokens=False) == tokens
    mlx_scores = np.array(model(mx.array([sequence[:-1]]))[0].astype(mx.float32))
    assert np.abs(mlx_scores - gguf_scores).max() < SCORE_TOLERANCE
    # Each token llama.cpp chose greedily is MLX's choice too, or within the tolerance of it.
    at = np.arange(len(tokens) - 1, len(sequence) - 1)
    chosen = mlx_scores[at, continuation]
    assert (mlx_scores[at].max(axis=1) - chosen).max() < SCORE_TOLERANCE
