"""What one file or folder is, read from its content (importer/detect.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest

from heylook_llm.importer.detect import (
    FoundModel,
    Projector,
    Shard,
    Skipped,
    detect_folder,
    detect_gguf,
    unrecognised_reason,
)
from tests.support.import_fixtures import (
    add_vision_config,
    split_gguf,
    write_gguf,
    write_projector,
    write_pytorch_checkpoint,
    write_transformers_checkpoint,
)

pytestmark = pytest.mark.unit


def _model(result: object) -> FoundModel:
    assert isinstance(result, FoundModel), result
    return result


def test_gguf_header_facts(tmp_path: Path) -> None:
    found = _model(detect_gguf(write_gguf(tmp_path / "any-name.bin", context=32768, width=128, heads=4, kv_heads=2)))
    assert found.provider == "llama_cpp"
    assert (found.info.family, found.quantization, found.context_length) == ("llama", "Q8_0", 32768)
    assert found.parameter_count == 16 * 128
    assert found.info.chat_template is not None and not found.embedding and not found.vision
    assert found.name == "any-name" and found.files == (found.path,)
    # 2 layers x 2 KV heads x (32 + 32) numbers, cached as f16 by llama.cpp
    assert found.kv is not None and (found.kv.values_per_token, found.kv.head_dim, found.kv.element_bytes) == (
        2 * 2 * 64,
        32,
        2,
    )


def test_demo_gguf_is_a_chat_model_and_the_embed_one_an_embedding_model(demo_dir: Path) -> None:
    chat = _model(detect_gguf(demo_dir / "demo-gguf.gguf"))
    embed = _model(detect_gguf(demo_dir / "demo-embed-gguf.gguf"))
    assert (chat.embedding, embed.embedding) == (False, True)
    assert chat.quantization == "F32" and chat.context_length == 2048 and chat.parameter_count == 164160


@pytest.mark.parametrize("arch", ["bert", "nomic-bert", "jina-bert-v2"])
def test_encoder_architectures_are_embedding_models(tmp_path: Path, arch: str) -> None:
    found = _model(detect_gguf(write_gguf(tmp_path / "e.gguf", arch, context=512, chat_template=False)))
    assert found.embedding
    assert not found.notes  # no "no chat template" note for a model that never chats


def test_pooling_type_marks_a_decoder_as_embedding_model(tmp_path: Path) -> None:
    found = _model(detect_gguf(write_gguf(tmp_path / "e.gguf", "qwen2", pooling=gguf.PoolingType.LAST)))
    assert found.embedding


def test_a_missing_chat_template_is_noted(tmp_path: Path) -> None:
    found = _model(detect_gguf(write_gguf(tmp_path / "m.gguf", chat_template=False)))
    assert any("no chat template" in note for note in found.notes)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"pooling": gguf.PoolingType.RANK}, "reranker"),
        ({"general_type": "adapter"}, "LoRA adapter"),
        ({"general_type": "imatrix"}, "importance matrix"),
    ],
)
def test_files_that_are_not_models_are_skipped_with_the_reason(
    tmp_path: Path, kwargs: dict[str, object], reason: str
) -> None:
    result = detect_gguf(write_gguf(tmp_path / "x.gguf", **kwargs))  # type: ignore[arg-type]
    assert isinstance(result, Skipped) and reason in result.reason


def test_projector_is_recognised_by_architecture(tmp_path: Path) -> None:
    result = detect_gguf(write_projector(tmp_path / "whatever.gguf", projection_dim=96))
    assert isinstance(result, Projector)
    assert (result.projection_dim, result.quantization) == (96, "F16")


def test_split_model_is_its_first_shard_with_all_parts(demo_dir: Path, tmp_path: Path) -> None:
    parts = split_gguf(demo_dir / "demo-gguf.gguf", tmp_path / "big-00001-of-00003.gguf", 3)
    first = _model(detect_gguf(parts[0]))
    assert first.files == tuple(parts) and first.shard_count == 3 and first.name == "big"
    assert first.parameter_count == 164160  # summed over the shards, as in the single file
    assert first.size_bytes == sum(p.stat().st_size for p in parts)
    assert detect_gguf(parts[1]) == Shard(parts[1], 2, 3)


def test_split_model_with_a_missing_shard_is_skipped(demo_dir: Path, tmp_path: Path) -> None:
    parts = split_gguf(demo_dir / "demo-gguf.gguf", tmp_path / "big-00001-of-00003.gguf", 3)
    parts[2].unlink()
    result = detect_gguf(parts[0])
    assert isinstance(result, Skipped) and "shard 3 of 3" in result.reason and "missing" in result.reason


def test_split_model_renamed_away_from_llama_cpp_naming_is_skipped(demo_dir: Path, tmp_path: Path) -> None:
    parts = split_gguf(demo_dir / "demo-gguf.gguf", tmp_path / "big-00001-of-00002.gguf", 2)
    renamed = parts[0].rename(tmp_path / "first.gguf")
    result = detect_gguf(renamed)
    assert isinstance(result, Skipped) and "PREFIX-00001-of-00002.gguf" in result.reason


def test_mlx_folder(demo_dir: Path) -> None:
    found = _model(detect_folder(demo_dir / "demo-mlx"))
    assert found.provider == "mlx" and not found.vision
    assert found.context_length == 2048 and found.info.chat_template is not None
    assert found.kv is not None and (found.kv.head_dim, found.kv.element_bytes) == (16, 4)  # float32 weights


def test_mlx_vision_folder_from_its_config(demo_dir: Path, tmp_path: Path) -> None:
    folder = add_vision_config(Path(shutil.copytree(demo_dir / "demo-mlx", tmp_path / "vlm")))
    found = _model(detect_folder(folder))
    assert found.vision and found.kv is not None and found.kv.head_dim == 16


def test_vision_folder_of_a_type_mlx_vlm_lacks_is_skipped(demo_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlx_vlm")
    folder = add_vision_config(Path(shutil.copytree(demo_dir / "demo-mlx", tmp_path / "vlm")))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no_such_vlm"}))
    result = detect_folder(folder)
    assert isinstance(result, Skipped) and "mlx-vlm has no model code for model_type 'no_such_vlm'" in result.reason


def test_transformers_checkpoint_is_skipped_with_the_conversion_hint(tmp_path: Path) -> None:
    result = detect_folder(write_transformers_checkpoint(tmp_path / "hf"))
    assert isinstance(result, Skipped)
    assert "transformers checkpoint" in result.reason and "format pt" in result.reason
    assert "mlx_lm.convert" in result.reason


def test_pytorch_only_checkpoint_is_skipped(tmp_path: Path) -> None:
    result = detect_folder(write_pytorch_checkpoint(tmp_path / "pt"))
    assert isinstance(result, Skipped) and "pytorch_model.bin" in result.reason


def test_mlx_folder_with_missing_indexed_weights_is_skipped(demo_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(demo_dir / "demo-mlx", tmp_path / "partial"))
    index = {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    result = detect_folder(folder)
    assert isinstance(result, Skipped) and "model-00002-of-00002.safetensors" in result.reason


def test_unknown_mlx_model_type_is_skipped(demo_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(demo_dir / "demo-mlx", tmp_path / "odd"))
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"model_type": "llama"', '"model_type": "no_such_arch"'))
    result = detect_folder(folder)
    assert isinstance(result, Skipped) and "no_such_arch" in result.reason


def test_a_config_json_that_is_not_a_model_is_no_model_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"do_lower_case": true}')
    assert detect_folder(tmp_path) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("notes.txt", None),
        ("README.md", None),
        ("fake.gguf", "not a GGUF file"),
        ("loose.safetensors", "without a model config.json"),
        ("model.pt", "GGUF files and MLX folders only"),
    ],
)
def test_unrecognised_files(name: str, reason: str | None) -> None:
    found = unrecognised_reason(Path(name))
    assert (found is None) if reason is None else (found is not None and reason in found)
