"""The demo llama model as a GGUF file for llama.cpp (`demo-gguf`, and `demo-embed-gguf` with mean pooling).

The file carries the demo tokenizer (GPT-2 style BPE: tokens, token types, merges, BOS/EOS ids) and the ChatML
chat template, and the weights renamed to GGUF tensor names, with the query and key projections permuted to
the interleaved rotary layout llama.cpp expects. The same inputs give a byte-identical file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from heylook_llm.demo.tokenizer import BOS_TOKEN, CHATML_TEMPLATE, EOS_TOKEN, SPECIAL_TOKENS, TrainedTokenizer
from heylook_llm.demo.weights import Array, ModelShape


def _rope_permute(weight: Array, heads: int) -> Array:
    """Hugging Face stores rotary halves split per head; GGUF expects them interleaved."""
    rows = weight.shape[0]
    split = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    permuted: Array = split.swapaxes(1, 2).reshape(weight.shape)
    return permuted


def write_llama_gguf(
    path: Path,
    shape: ModelShape,
    weights: dict[str, Array],
    tokenizer: TrainedTokenizer,
    *,
    name: str,
    embedding: bool = False,
    f16: bool = False,
    chat_template: str = CHATML_TEMPLATE,
) -> None:
    """`f16` stores the matrices as float16 (norm vectors stay float32, as llama.cpp's converter does)."""
    # Imported here, not at the top: loading `gguf` is slow, and the server imports this package at start-up
    # only to check whether the demo models on disk are current.
    import gguf

    if f16:
        weights = {k: v.astype(np.float16) if v.ndim == 2 else v for k, v in weights.items()}

    # The gguf writer logs every file at INFO; that is noise in a server's start-up log.
    logging.getLogger("gguf").setLevel(logging.WARNING)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
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
    writer.add_chat_template(chat_template)

    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(shape.layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", weights[p + "input_layernorm.weight"])
        writer.add_tensor(b + "attn_q.weight", _rope_permute(weights[p + "self_attn.q_proj.weight"], shape.heads))
        writer.add_tensor(b + "attn_k.weight", _rope_permute(weights[p + "self_attn.k_proj.weight"], shape.kv_heads))
        writer.add_tensor(b + "attn_v.weight", weights[p + "self_attn.v_proj.weight"])
        writer.add_tensor(b + "attn_output.weight", weights[p + "self_attn.o_proj.weight"])
        writer.add_tensor(b + "ffn_norm.weight", weights[p + "post_attention_layernorm.weight"])
        writer.add_tensor(b + "ffn_gate.weight", weights[p + "mlp.gate_proj.weight"])
        writer.add_tensor(b + "ffn_up.weight", weights[p + "mlp.up_proj.weight"])
        writer.add_tensor(b + "ffn_down.weight", weights[p + "mlp.down_proj.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])

    tmp = path.with_suffix(path.suffix + ".tmp")
    writer.path = tmp
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
