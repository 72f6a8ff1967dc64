"""The demo reranker (`demo-rerank-gguf`): a one-layer Qwen3-architecture GGUF with rank pooling.

llama.cpp scores a Qwen3 reranker on the last token of the query-document prompt (causal attention: it sees the
whole pair), through the classification head `cls.output` (two rows, labels "yes" and "no") and a softmax; the
score is the "yes" probability. Random weights would give scores nobody can predict, so these are chosen:

- the query and key projections are zero, so every attention head spreads evenly over the prompt;
- the value and output projections copy embedding column 0 through one head, and the feed-forward block adds
  nothing, so column 0 of the last hidden state is the mean of column 0 over the prompt's (normalised) tokens;
- column 0 of every token embedding is zero, except for the tokens of the word "llama" (lower case; the demo
  vocabulary has it as one token both after a space and at the start of a text), where it is positive;
- the head's "yes" row reads column 0, its "no" row is zero.

So a pair's score is 0.5 plus a rising function of the share of "llama" tokens in the prompt: documents that say
"llama" rank first, the more densely the higher, and all others score exactly 0.5 (ties keep the input order).
The other embedding columns are random, as in the other demo models.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from heylook_llm.demo.tokenizer import BOS_TOKEN, EOS_TOKEN, SPECIAL_TOKENS, TrainedTokenizer
from heylook_llm.demo.weights import Array

DEMO_RERANK_GGUF = "demo-rerank-gguf.gguf"
RERANK_MARKER_WORD = "llama"
"""Documents holding this word score above the others on the demo reranker."""
RERANK_TEMPLATE = (
    "<|im_start|>query\n{query}<|im_end|>\n<|im_start|>document\n{document}<|im_end|>\n<|im_start|>relevant\n"
)
"""The pair's prompt, stored as the GGUF's `tokenizer.chat_template.rerank`, as Qwen3 reranker conversions do."""

_HIDDEN = 64
_HEADS = 4
_KV_HEADS = 2
_FFN = 64
_MARK = 4.0
_HEAD_SCALE = 8.0


def marker_token_ids(tokenizer: TrainedTokenizer) -> list[int]:
    """Ids of the tokens that spell the marker word alone (with or without the byte-level space mark)."""
    return [i for i, t in enumerate(tokenizer.tokens) if t.lstrip("\u0120") == RERANK_MARKER_WORD]


def rerank_weights(vocab: int, marker_ids: list[int], seed: int) -> dict[str, Array]:
    """GGUF-named tensors (numpy row-major: [rows = outputs, cols = inputs])."""
    rng = np.random.default_rng(seed)
    head_dim = _HIDDEN // _HEADS
    embeddings = rng.standard_normal((vocab, _HIDDEN)).astype(np.float32)
    embeddings[:, 0] = 0.0
    embeddings[marker_ids, 0] = _MARK
    value = np.zeros((_KV_HEADS * head_dim, _HIDDEN), dtype=np.float32)
    value[0, 0] = 1.0
    output = np.zeros((_HIDDEN, _HEADS * head_dim), dtype=np.float32)
    output[0, 0] = 1.0
    head = np.zeros((2, _HIDDEN), dtype=np.float32)
    head[0, 0] = _HEAD_SCALE
    ones = np.ones(_HIDDEN, dtype=np.float32)
    return {
        "token_embd.weight": embeddings,
        "blk.0.attn_norm.weight": ones,
        "blk.0.attn_q.weight": np.zeros((_HEADS * head_dim, _HIDDEN), dtype=np.float32),
        "blk.0.attn_q_norm.weight": np.ones(head_dim, dtype=np.float32),
        "blk.0.attn_k.weight": np.zeros((_KV_HEADS * head_dim, _HIDDEN), dtype=np.float32),
        "blk.0.attn_k_norm.weight": np.ones(head_dim, dtype=np.float32),
        "blk.0.attn_v.weight": value,
        "blk.0.attn_output.weight": output,
        "blk.0.ffn_norm.weight": ones,
        "blk.0.ffn_gate.weight": np.zeros((_FFN, _HIDDEN), dtype=np.float32),
        "blk.0.ffn_up.weight": np.zeros((_FFN, _HIDDEN), dtype=np.float32),
        "blk.0.ffn_down.weight": np.zeros((_HIDDEN, _FFN), dtype=np.float32),
        "output_norm.weight": ones,
        "cls.output.weight": head,
    }


def write_rerank_gguf(path: Path, tokenizer: TrainedTokenizer, *, seed: int = 3) -> None:
    """Write the demo reranker; the same tokenizer and seed give a byte-identical file."""
    # Imported here for the same reason as in gguf_writer.py: `gguf` is slow to import.
    import gguf

    logging.getLogger("gguf").setLevel(logging.WARNING)
    vocab = len(tokenizer.tokens)
    weights = rerank_weights(vocab, marker_token_ids(tokenizer), seed)
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_name("demo-rerank-gguf")
    writer.add_context_length(2048)
    writer.add_embedding_length(_HIDDEN)
    writer.add_block_count(1)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_key_length(_HIDDEN // _HEADS)
    writer.add_value_length(_HIDDEN // _HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_pooling_type(gguf.PoolingType.RANK)
    writer.add_classifier_output_labels(["yes", "no"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokenizer.tokens)
    special = set(SPECIAL_TOKENS)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokenizer.tokens]
    )
    writer.add_token_merges(tokenizer.merges)
    writer.add_bos_token_id(tokenizer.token_id(BOS_TOKEN))
    writer.add_eos_token_id(tokenizer.token_id(EOS_TOKEN))
    writer.add_add_bos_token(False)
    writer.add_chat_template([{"name": "rerank", "template": RERANK_TEMPLATE}])
    for name, tensor in weights.items():
        writer.add_tensor(name, tensor)

    tmp = path.with_suffix(path.suffix + ".tmp")
    writer.path = tmp
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
