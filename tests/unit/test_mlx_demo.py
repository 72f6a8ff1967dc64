"""The MLX demo folders: deterministic files, the same weights as the GGUF demo model, a one-block draft model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from heylook_llm.demo import (
    DEMO_MLX_DIR,
    DEMO_MLX_DRAFT_DIR,
    EOS_TOKEN,
    MLX_MODEL_FILES,
    ModelShape,
    demo_models_current,
    random_weights,
    train_tokenizer,
    write_demo_models,
)

pytestmark = pytest.mark.unit


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_models(out)
    return out


def test_the_same_command_twice_writes_identical_files(written: Path, tmp_path: Path) -> None:
    write_demo_models(tmp_path)
    first, second = _digests(written), _digests(tmp_path)
    assert first == second
    for folder in (DEMO_MLX_DIR, DEMO_MLX_DRAFT_DIR):
        for name in MLX_MODEL_FILES:
            assert f"{folder}/{name}" in first


def test_mlx_folder_holds_the_gguf_models_weights(written: Path) -> None:
    shape = ModelShape()
    tokenizer = train_tokenizer(shape.vocab)
    expected = random_weights(shape, len(tokenizer.tokens), seed=0, eos_id=tokenizer.token_id(EOS_TOKEN))
    stored = load_file(str(written / DEMO_MLX_DIR / "model.safetensors"))
    assert stored.keys() == expected.keys()
    for name, weight in expected.items():
        assert stored[name].dtype == np.float32
        np.testing.assert_array_equal(stored[name], weight)
    config = json.loads((written / DEMO_MLX_DIR / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == shape.layers
    assert config["vocab_size"] == len(tokenizer.tokens) and config["eos_token_id"] == tokenizer.token_id(EOS_TOKEN)
    tok_config = json.loads((written / DEMO_MLX_DIR / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == EOS_TOKEN and "<|im_start|>" in tok_config["chat_template"]
    assert (written / DEMO_MLX_DIR / "tokenizer.json").read_text() == tokenizer.tokenizer_json


def test_draft_model_is_the_first_block_of_the_chat_model(written: Path) -> None:
    main = load_file(str(written / DEMO_MLX_DIR / "model.safetensors"))
    draft = load_file(str(written / DEMO_MLX_DRAFT_DIR / "model.safetensors"))
    assert not any(name.startswith("model.layers.1.") for name in draft)
    for name, weight in draft.items():
        np.testing.assert_array_equal(weight, main[name])
    config = json.loads((written / DEMO_MLX_DRAFT_DIR / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert (written / DEMO_MLX_DRAFT_DIR / "tokenizer.json").read_bytes() == (
        written / DEMO_MLX_DIR / "tokenizer.json"
    ).read_bytes()


def test_models_yaml_serves_demo_mlx_and_is_current(written: Path) -> None:
    data = yaml.safe_load((written / "models.yaml").read_text())
    entry = next(m for m in data["models"] if m["id"] == "demo-mlx")
    assert entry["provider"] == "mlx" and entry["config"]["model_path"] == DEMO_MLX_DIR
    assert demo_models_current(written)
    (written / DEMO_MLX_DRAFT_DIR / "model.safetensors").rename(written / "moved.safetensors")
    try:
        assert not demo_models_current(written)
    finally:
        (written / "moved.safetensors").rename(written / DEMO_MLX_DRAFT_DIR / "model.safetensors")
