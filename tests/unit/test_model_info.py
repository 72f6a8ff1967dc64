"""model_info: facts read from GGUF headers and MLX folders, and content digests cached by path, size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import quants

from heylook_llm.gguf_header import GgufError, read_gguf_header
from heylook_llm.model_info import (
    ModelFileError,
    ModelInfoReader,
    content_sha256,
    format_parameter_count,
    read_model_files,
)

pytestmark = pytest.mark.unit


def _write_gguf(
    path: Path,
    *,
    file_type: gguf.LlamaFileType | None,
    quantized: bool,
    fim: bool = False,
    tokens: int = 100,
) -> int:
    """A tiny GGUF header plus tensors; returns the number of parameters written."""
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(4096)
    writer.add_block_count(1)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_token_list([f"t{i}" for i in range(tokens)])
    writer.add_chat_template("{{ messages[0]['content'] }}")
    if fim:
        writer.add_uint32("tokenizer.ggml.fim_pre_token_id", 5)
    weight = np.ones((8, 64), dtype=np.float32)
    if quantized:
        packed = quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor("blk.0.attn_q.weight", packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor("blk.0.attn_q.weight", weight)
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return 8 * 64 + 64


def test_gguf_facts_come_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "model-named-llama-7b-q4.gguf"  # the name says nothing true: facts must not come from it
    count = _write_gguf(path, file_type=gguf.LlamaFileType.MOSTLY_Q8_0, quantized=True, fim=True)
    info = read_model_files(path)
    assert (info.format, info.family, info.families) == ("gguf", "qwen2", ("qwen2",))
    assert info.parameter_count == count
    assert info.quantization_level == "Q8_0"
    assert info.context_length == 4096
    assert info.chat_template == "{{ messages[0]['content'] }}"
    assert info.has_fill_in_middle
    assert info.size_bytes == path.stat().st_size
    assert info.metadata["general.architecture"] == "qwen2"
    assert info.metadata["qwen2.context_length"] == 4096
    assert info.metadata["general.parameter_count"] == count
    # The token list is long: left out (null) unless asked for.
    assert info.metadata["tokenizer.ggml.tokens"] is None
    full = read_model_files(path, include_large_arrays=True)
    assert full.metadata["tokenizer.ggml.tokens"][:3] == ["t0", "t1", "t2"]


def test_gguf_without_file_type_names_the_dominant_tensor_type(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, file_type=None, quantized=True)
    info = read_model_files(path)
    assert info.quantization_level == "Q8_0"
    assert not info.has_fill_in_middle


def test_unquantized_gguf_reports_its_float_type(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, file_type=gguf.LlamaFileType.ALL_F32, quantized=False)
    assert read_model_files(path).quantization_level == "F32"


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header: dict[str, object] = {}
    offset = 0
    sizes = {"F16": 2, "BF16": 2, "F32": 4, "U32": 4}
    for name, (dtype, shape) in tensors.items():
        size = int(np.prod(shape)) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_quantized_mlx_folder_counts_unpacked_parameters(tmp_path: Path) -> None:
    folder = tmp_path / "mlx-model"
    folder.mkdir()
    config = {
        "model_type": "mistral",
        "max_position_embeddings": 32768,
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "quantization": {"group_size": 64, "bits": 4},
        "vision_config": {"hidden_size": 32},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ bos_token }}"}))
    # A 4-bit 128x64 weight is stored as 128 x (64*4/32) uint32 words plus scales and biases per group.
    _write_safetensors(
        folder / "model.safetensors",
        {
            "layers.0.q_proj.weight": ("U32", [128, 8]),
            "layers.0.q_proj.scales": ("F16", [128, 1]),
            "layers.0.q_proj.biases": ("F16", [128, 1]),
            "norm.weight": ("F16", [64]),
        },
    )
    info = read_model_files(folder)
    assert (info.format, info.family) == ("safetensors", "mistral")
    assert info.parameter_count == 128 * 64 + 64
    assert info.quantization_level == "Q4"
    assert info.context_length == 32768
    assert info.chat_template == "{{ bos_token }}"
    assert info.has_vision
    assert info.metadata["mistral.embedding_length"] == 64
    assert info.size_bytes == sum(f.stat().st_size for f in folder.iterdir())


def test_float_mlx_folder_reports_its_dtype(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _write_safetensors(folder / "model.safetensors", {"a.weight": ("BF16", [10, 10]), "b": ("F32", [3])})
    info = read_model_files(folder)
    assert info.quantization_level == "BF16"
    assert info.parameter_count == 103
    assert info.chat_template is None and not info.has_vision


def test_unreadable_paths_are_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError):
        read_model_files(tmp_path / "missing.gguf")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelFileError, match=r"config\.json"):
        read_model_files(tmp_path / "folder")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelFileError):
        read_model_files(tmp_path / "junk.gguf")


@pytest.mark.parametrize(
    ("count", "text"), [(8_030_261_248, "8.0B"), (568_200_000, "568.2M"), (164_160, "164.2K"), (999, "999")]
)
def test_parameter_sizes_read_like_ollamas(count: int, text: str) -> None:
    assert format_parameter_count(count) == text


def test_file_digest_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"weights" * 1000)
    assert ModelInfoReader().digest(path) == hashlib.sha256(b"weights" * 1000).hexdigest()


def test_digest_is_cached_by_path_size_and_mtime_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache" / "digests.json"
    first = ModelInfoReader(cache).digest(path)
    # Same size and mtime, other bytes: a fresh reader trusts the cache file and does not hash again...
    stat = path.stat()
    path.write_bytes(b"b" * 4096)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ModelInfoReader(cache).digest(path) == first
    # ...until the modification time changes.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert ModelInfoReader(cache).digest(path) == hashlib.sha256(b"b" * 4096).hexdigest()


def test_folder_digest_covers_names_and_contents(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    (folder / "b.safetensors").write_bytes(b"123")
    before = content_sha256(folder)
    assert before == content_sha256(folder)
    (folder / "b.safetensors").write_bytes(b"124")
    changed = content_sha256(folder)
    (folder / "b.safetensors").rename(folder / "c.safetensors")
    assert len({before, changed, content_sha256(folder)}) == 3


def test_info_is_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, file_type=gguf.LlamaFileType.ALL_F32, quantized=False)
    reader = ModelInfoReader()
    assert reader.info(path).quantization_level == "F32"
    stat = path.stat()
    _write_gguf(path, file_type=gguf.LlamaFileType.MOSTLY_Q8_0, quantized=True)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert reader.info(path).quantization_level == "Q8_0"


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_header_reader_agrees_with_the_gguf_packages_reader(tmp_path: Path, endian: gguf.GGUFEndian) -> None:
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_context_length(8192)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_add_bos_token(True)
    writer.add_token_list([f"tok{i}" for i in range(300)] + ["<|fim_prefix|>"])
    writer.add_token_scores([0.5] * 301)
    writer.add_array("test.small", [1, 2, 3])
    writer.add_string("test.text", "héllo")
    writer.add_tensor("a.weight", np.ones((3, 5), dtype=np.float32))
    writer.add_tensor("b.weight", np.ones((2, 2, 4), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_gguf_header(path, include_large_arrays=True, watch_tokens=frozenset({"<|fim_prefix|>", "<x>"}))
    reference = gguf.GGUFReader(str(path))
    for name, field in reference.fields.items():
        if name.startswith("GGUF."):
            continue
        expected = field.contents()
        assert header.metadata[name] == (pytest.approx(expected) if isinstance(expected, float) else expected), name
    assert header.metadata["llama.attention.layer_norm_rms_epsilon"] == 1e-5  # float32 shown in short form
    assert [(t.name, t.shape[::-1], t.ggml_type) for t in header.tensors] == [
        (t.name, tuple(int(d) for d in t.data.shape), int(t.tensor_type)) for t in reference.tensors
    ]
    assert header.found_tokens == {"<|fim_prefix|>"}
    short = read_gguf_header(path)
    assert set(short.skipped_arrays) == {"tokenizer.ggml.tokens", "tokenizer.ggml.scores"}
    assert short.metadata["test.small"] == [1, 2, 3]


def test_header_reader_refuses_files_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, file_type=gguf.LlamaFileType.ALL_F32, quantized=False)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GgufError):
        read_gguf_header(cut)
