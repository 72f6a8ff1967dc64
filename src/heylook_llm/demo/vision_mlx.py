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

from pathlib import Path

from safetensors.numpy import save_file

from heylook_llm.demo.files import write_json
from heylook_llm.demo.tokenizer import BOS_TOKEN, EOS_TOKEN, TrainedTokenizer
from heylook_llm.demo.vision_weights import (
    CLIP_IMAGE_MEAN,
    CLIP_IMAGE_STD,
    CLIP_LAYER_NORM_EPS,
    VisionShape,
    vision_weights,
)
from heylook_llm.demo.weights import ModelShape, random_weights

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


def tokenizer_with_image_token(tokenizer: TrainedTokenizer) -> tuple[str, int]:
    """The tokenizer's JSON with `<image>` added as a special token, and that token's id."""
    # Imported here, not at the top: the server imports this package at start-up only to check whether the
    # demo models on disk are current, and that check should not pay for loading `tokenizers`.
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(tokenizer.tokenizer_json)
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    image_id = tok.token_to_id(IMAGE_TOKEN)
    assert image_id is not None
    return tok.to_str(), int(image_id)


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
            "layer_norm_eps": CLIP_LAYER_NORM_EPS,
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
        "image_mean": CLIP_IMAGE_MEAN,
        "image_std": CLIP_IMAGE_STD,
        "do_convert_rgb": True,
        "resample": 3,
    }


def write_vision_mlx_model(folder: Path, text: ModelShape, tokenizer: TrainedTokenizer, seed: int = 2) -> None:
    """Write `folder` as a llava model mlx-vlm loads; deterministic for the same inputs."""
    vision = VisionShape()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_json, image_id = tokenizer_with_image_token(tokenizer)
    vocab = image_id + 1
    eos_id = tokenizer.token_id(EOS_TOKEN)
    language = random_weights(text, vocab, seed=seed, eos_id=eos_id)
    weights = {f"language_model.{name}": w for name, w in language.items()}
    weights.update(vision_weights(vision, text.hidden, seed=seed + 1))
    write_json(folder / "config.json", _config(text, vision, vocab, image_id, eos_id))
    write_json(
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
    write_json(folder / "preprocessor_config.json", _preprocessor_config(vision))
    write_json(
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
