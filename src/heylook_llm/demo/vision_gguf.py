"""A tiny random-weight vision projector GGUF for llama.cpp (`demo-vision-gguf`).

llama.cpp keeps a vision model's image encoder in a separate "mmproj" GGUF (architecture `clip`) that libmtmd
loads beside the language model. This one is a llava-style projector (`projector_type: mlp`): the same CLIP
vision tower shape as the MLX demo (2 layers, 56x56 pixels in 14x14 patches, so 16 image tokens per image) and
a two-layer projector whose output width is the demo language model's hidden size, so it pairs with
`demo-gguf.gguf` unchanged. Weights come from vision_weights.py (Hugging Face names) and are renamed to the GGUF
tensor names libmtmd's clip loader looks up. The same inputs give a byte-identical file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from heylook_llm.demo.vision_weights import (
    CLIP_IMAGE_MEAN,
    CLIP_IMAGE_STD,
    CLIP_LAYER_NORM_EPS,
    VisionShape,
    vision_weights,
)
from heylook_llm.demo.weights import Array

DEMO_VISION_GGUF_PROJECTOR = "demo-vision-gguf-mmproj.gguf"

_TOWER = "vision_tower.vision_model."
# Hugging Face CLIP encoder layer parts -> the clip loader's per-block tensor names.
_BLOCK_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.out_proj": "attn_out",
    "layer_norm1": "ln1",
    "layer_norm2": "ln2",
    "mlp.fc1": "ffn_up",
    "mlp.fc2": "ffn_down",
}


def projector_tensors(weights: dict[str, Array], layers: int) -> dict[str, Array]:
    """The vision tower and llava projector under GGUF names (`v.*` encoder, `mm.0` / `mm.2` projector)."""
    out: dict[str, Array] = {
        "v.class_embd": weights[_TOWER + "embeddings.class_embedding"],
        # Out x in x kH x kW in numpy order; GGUF stores the reverse, which is the layout ggml's conv2d expects.
        "v.patch_embd.weight": weights[_TOWER + "embeddings.patch_embedding.weight"],
        "v.position_embd.weight": weights[_TOWER + "embeddings.position_embedding.weight"],
        "v.pre_ln.weight": weights[_TOWER + "pre_layrnorm.weight"],
        "v.pre_ln.bias": weights[_TOWER + "pre_layrnorm.bias"],
        "v.post_ln.weight": weights[_TOWER + "post_layernorm.weight"],
        "v.post_ln.bias": weights[_TOWER + "post_layernorm.bias"],
    }
    for i in range(layers):
        for hf_name, gguf_name in _BLOCK_TENSORS.items():
            for kind in ("weight", "bias"):
                out[f"v.blk.{i}.{gguf_name}.{kind}"] = weights[f"{_TOWER}encoder.layers.{i}.{hf_name}.{kind}"]
    # llava's projector is Linear, GELU, Linear: the linear layers sit at indices 0 and 2 of its Sequential.
    for index, hf_name in ((0, "linear_1"), (2, "linear_2")):
        for kind in ("weight", "bias"):
            out[f"mm.{index}.{kind}"] = weights[f"multi_modal_projector.{hf_name}.{kind}"]
    return out


def write_vision_projector_gguf(
    path: Path, text_hidden: int, *, vision: VisionShape | None = None, seed: int = 3, name: str = "demo-vision-gguf"
) -> None:
    """Write a clip projector GGUF mapping images to `text_hidden`-wide embeddings; deterministic."""
    # Imported here, not at the top: loading `gguf` is slow, and the server imports this package at start-up
    # only to check whether the demo models on disk are current.
    import gguf

    shape = vision or VisionShape()
    tensors = projector_tensors(vision_weights(shape, text_hidden, seed=seed), shape.layers)
    # The gguf writer logs every file at INFO; that is noise in a server's start-up log.
    logging.getLogger("gguf").setLevel(logging.WARNING)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name(name)
    writer.add_type("mmproj")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    vision_key = "clip.vision."
    writer.add_uint32(vision_key + "image_size", shape.image_size)
    writer.add_uint32(vision_key + "patch_size", shape.patch_size)
    writer.add_uint32(vision_key + "embedding_length", shape.hidden)
    writer.add_uint32(vision_key + "feed_forward_length", shape.ffn)
    writer.add_uint32(vision_key + "block_count", shape.layers)
    writer.add_uint32(vision_key + "attention.head_count", shape.heads)
    writer.add_float32(vision_key + "attention.layer_norm_epsilon", CLIP_LAYER_NORM_EPS)
    writer.add_uint32(vision_key + "projection_dim", text_hidden)
    writer.add_array(vision_key + "image_mean", CLIP_IMAGE_MEAN)
    writer.add_array(vision_key + "image_std", CLIP_IMAGE_STD)
    for tensor_name, values in tensors.items():
        writer.add_tensor(tensor_name, values)

    tmp = path.with_suffix(path.suffix + ".tmp")
    writer.path = tmp
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
