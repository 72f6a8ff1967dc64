"""The demo language model's shape and random weights, generated from a seed.

Weights are kept in Hugging Face layout and naming in memory (`model.layers.N.self_attn.q_proj.weight`, ...)
so that every format (GGUF, MLX, the llava language model) is written from the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelShape:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 192
    vocab: int = 512
    context: int = 2048
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5


def random_weights(shape: ModelShape, vocab: int, seed: int, eos_id: int) -> dict[str, Array]:
    """Llama weights in Hugging Face layout and naming (`model.layers.N.self_attn.q_proj.weight`, ...)."""
    rng = np.random.default_rng(seed)
    head_dim = shape.hidden // shape.heads

    def dense(rows: int, cols: int) -> Array:
        values: Array = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        return values

    w: dict[str, Array] = {"model.embed_tokens.weight": rng.standard_normal((vocab, shape.hidden)).astype(np.float32)}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(shape.hidden, dtype=np.float32)
        w[p + "self_attn.q_proj.weight"] = dense(shape.heads * head_dim, shape.hidden)
        w[p + "self_attn.k_proj.weight"] = dense(shape.kv_heads * head_dim, shape.hidden)
        w[p + "self_attn.v_proj.weight"] = dense(shape.kv_heads * head_dim, shape.hidden)
        w[p + "self_attn.o_proj.weight"] = dense(shape.hidden, shape.heads * head_dim)
        w[p + "post_attention_layernorm.weight"] = np.ones(shape.hidden, dtype=np.float32)
        w[p + "mlp.gate_proj.weight"] = dense(shape.ffn, shape.hidden)
        w[p + "mlp.up_proj.weight"] = dense(shape.ffn, shape.hidden)
        w[p + "mlp.down_proj.weight"] = dense(shape.hidden, shape.ffn)
    w["model.norm.weight"] = np.ones(shape.hidden, dtype=np.float32)
    lm_head = dense(vocab, shape.hidden) * 4.0
    # A zero row gives the end-of-sequence token logit 0 while others spread around it, so greedy decoding
    # runs to max_tokens: tests can count tokens. Sampling still ends early now and then, as real models do.
    lm_head[eos_id] = 0.0
    w["lm_head.weight"] = lm_head
    return w
