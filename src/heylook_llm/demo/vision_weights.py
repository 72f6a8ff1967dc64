"""The demo vision model's shape and random weights: a CLIP vision tower and a llava projector.

Both vision demos are written from these numbers: `demo-vision-mlx` (vision_mlx.py) stores them under their
Hugging Face names, `demo-vision-gguf` (vision_gguf.py) renames them for llama.cpp's clip loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heylook_llm.demo.weights import Array

# CLIP's image normalisation, as its image processor and llama.cpp's clip loader both take it.
CLIP_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
CLIP_LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True, slots=True)
class VisionShape:
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    ffn: int = 64
    image_size: int = 56
    patch_size: int = 14

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def vision_weights(shape: VisionShape, text_hidden: int, seed: int) -> dict[str, Array]:
    """CLIP vision tower and llava projector weights with Hugging Face names."""
    rng = np.random.default_rng(seed)
    h = shape.hidden

    def dense(rows: int, cols: int) -> Array:
        values: Array = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        return values

    def small(n: int) -> Array:
        values: Array = (rng.standard_normal(n) * 0.02).astype(np.float32)
        return values

    ones = np.ones(h, dtype=np.float32)
    v = "vision_tower.vision_model."
    patch_inputs = 3 * shape.patch_size * shape.patch_size
    patch: Array = (rng.standard_normal((h, 3, shape.patch_size, shape.patch_size)) / np.sqrt(patch_inputs)).astype(
        np.float32
    )
    w: dict[str, Array] = {
        v + "embeddings.class_embedding": small(h),
        v + "embeddings.patch_embedding.weight": patch,
        v + "embeddings.position_embedding.weight": dense(shape.patches + 1, h),
        v + "pre_layrnorm.weight": ones,
        v + "pre_layrnorm.bias": np.zeros(h, dtype=np.float32),
        v + "post_layernorm.weight": ones,
        v + "post_layernorm.bias": np.zeros(h, dtype=np.float32),
    }
    for i in range(shape.layers):
        p = f"{v}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[f"{p}self_attn.{name}.weight"] = dense(h, h)
            w[f"{p}self_attn.{name}.bias"] = small(h)
        for norm in ("layer_norm1", "layer_norm2"):
            w[f"{p}{norm}.weight"] = ones
            w[f"{p}{norm}.bias"] = np.zeros(h, dtype=np.float32)
        w[f"{p}mlp.fc1.weight"] = dense(shape.ffn, h)
        w[f"{p}mlp.fc1.bias"] = small(shape.ffn)
        w[f"{p}mlp.fc2.weight"] = dense(h, shape.ffn)
        w[f"{p}mlp.fc2.bias"] = small(h)
    # A larger projector output makes image embeddings as strong as token embeddings (which are N(0, 1)), so
    # different images visibly change what the random model writes.
    w["multi_modal_projector.linear_1.weight"] = dense(text_hidden, h) * 4.0
    w["multi_modal_projector.linear_1.bias"] = small(text_hidden)
    w["multi_modal_projector.linear_2.weight"] = dense(text_hidden, text_hidden) * 4.0
    w["multi_modal_projector.linear_2.bias"] = small(text_hidden)
    return w
