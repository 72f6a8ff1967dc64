"""A tiny random-weight vision model in mlx-vlm's llava layout (`demo-vision-mlx`).

Llava is the simplest architecture mlx-vlm serves whose processor builds offline from plain files: a CLIP
vision tower (here 2 layers, 56x56 pixels in 14x14 patches, so 16 image tokens per image), a two-layer
projector and the demo llama language model. The folder holds `config.json`, `model.safetensors` (Hugging
Face layout: patch embedding as out x in x kH x kW, which mlx-vlm transposes on load), the demo tokenizer
with an added `<image>` token, a CLIP `preprocessor_config.json`, a `processor_config.json` and a chat
template that places each image's `<image>` token before the text. Only `safetensors` and `tokenizers` are
needed to write it; the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heylook_llm.demo import BOS_TOKEN, EOS_TOKEN, Array, ModelShape, TrainedTokenizer, random_weights

DEMO_VISION_MLX_DIR = "demo-vision-mlx"
VISION_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
)
IMAGE_TOKEN = "<image>"

# Message content is either a string or a list of parts ({"type": "image"} / {"type": "text", "text": ...}),
# as Hugging Face processors pass it; each image becomes one `<image>` token, which the processor expands.
VISION_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


def tokenizer_with_image_token(tokenizer: TrainedTokenizer) -> tuple[str, int]:
    """The tokenizer's JSON with `<image>` added as a special token, and that token's id."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(tokenizer.tokenizer_json)
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    image_id = tok.token_to_id(IMAGE_TOKEN)
    assert image_id is not None
    return tok.to_str(), int(image_id)


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


def _config(text: ModelShape, vision: VisionShape, vocab: int, image_id: int, eos_id: int) -> dict[str, object]:
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": image_id,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": vocab,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "llama",
            "hidden_size": text.hidden,
            "num_hidden_layers": text.layers,
            "intermediate_size": text.ffn,
            "num_attention_heads": text.heads,
            "num_key_value_heads": text.kv_heads,
            "max_position_embeddings": text.context,
            "rms_norm_eps": text.rms_eps,
            "rope_theta": text.rope_theta,
            "vocab_size": vocab,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision.hidden,
            "num_hidden_layers": vision.layers,
            "num_attention_heads": vision.heads,
            "intermediate_size": vision.ffn,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "projection_dim": vision.hidden,
            "layer_norm_eps": 1e-5,
        },
    }


def _preprocessor_config(vision: VisionShape) -> dict[str, object]:
    """CLIP's image processor settings at this model's input size (resize, centre crop, normalise)."""
    side = vision.image_size
    return {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_resize": True,
        "size": {"shortest_edge": side},
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
        "resample": 3,
    }


def _write_json(path: Path, data: dict[str, object]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_vision_mlx_model(folder: Path, text: ModelShape, tokenizer: TrainedTokenizer, seed: int = 2) -> None:
    """Write `folder` as a llava model mlx-vlm loads; deterministic for the same inputs."""
    from safetensors.numpy import save_file

    vision = VisionShape()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_json, image_id = tokenizer_with_image_token(tokenizer)
    vocab = image_id + 1
    eos_id = tokenizer.token_id(EOS_TOKEN)
    language = random_weights(text, vocab, seed=seed, eos_id=eos_id)
    weights = {f"language_model.{name}": w for name, w in language.items()}
    weights.update(vision_weights(vision, text.hidden, seed=seed + 1))
    _write_json(folder / "config.json", _config(text, vision, vocab, image_id, eos_id))
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": BOS_TOKEN,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": text.context,
            "chat_template": VISION_CHAT_TEMPLATE,
            "processor_class": "LlavaProcessor",
        },
    )
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    _write_json(folder / "preprocessor_config.json", _preprocessor_config(vision))
    _write_json(
        folder / "processor_config.json",
        {
            "processor_class": "LlavaProcessor",
            "patch_size": vision.patch_size,
            "vision_feature_select_strategy": "default",
            "image_token": IMAGE_TOKEN,
            "num_additional_image_tokens": 1,
        },
    )
    tmp = folder / "model.safetensors.tmp"
    save_file(dict(weights), str(tmp), metadata={"format": "mlx"})
    tmp.replace(folder / "model.safetensors")
