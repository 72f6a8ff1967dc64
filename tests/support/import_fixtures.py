"""Model files for the import tests: small GGUF files with chosen header values, real split shards, projectors,
MLX folders, transformers checkpoints, and a Hugging Face cache laid out as huggingface_hub writes it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import save_file

from heylook_llm.demo import CHATML_TEMPLATE

logging.getLogger("gguf").setLevel(logging.WARNING)


def write_gguf(
    path: Path,
    arch: str = "llama",
    *,
    context: int = 4096,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.MOSTLY_Q8_0,
    pooling: gguf.PoolingType | None = None,
    chat_template: bool = True,
    general_type: str | None = None,
    extra: dict[str, tuple[Any, gguf.GGUFValueType]] | None = None,
) -> Path:
    """A header-true GGUF file with one small tensor: enough for detection, not for loading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    if general_type is not None:
        writer.add_type(general_type)
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_file_type(file_type)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    if chat_template:
        writer.add_chat_template(CHATML_TEMPLATE)
    for key, (value, vtype) in (extra or {}).items():
        writer.add_key_value(key, value, vtype)
    writer.add_tensor("token_embd.weight", np.zeros((16, width), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_projector(path: Path, *, projection_dim: int = 64, file_type: gguf.LlamaFileType | None = None) -> Path:
    """A vision projector as llama.cpp's converters write it: architecture clip, general.type mmproj."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_type("mmproj")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_uint32("clip.vision.projection_dim", projection_dim)
    writer.add_file_type(file_type if file_type is not None else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tensor("mm.0.weight", np.zeros((4, projection_dim), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def split_gguf(source: Path, first_shard: Path, shards: int) -> list[Path]:
    """Rewrite `source` as `shards` files with gguf-py's own splitting (split.no, split.count,
    split.tensors.count; names PREFIX-0000N-of-0000M.gguf), as llama.cpp's gguf-split does."""
    first_shard.parent.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields["general.architecture"].contents())
    per_shard = math.ceil(len(reader.tensors) / shards)
    writer = gguf.GGUFWriter(None, arch, split_max_tensors=per_shard)
    for name, reader_field in reader.fields.items():
        if name.startswith(("GGUF.", "split.")) or name == "general.architecture":
            continue
        main_type = reader_field.types[0]
        sub_type = reader_field.types[-1] if main_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, reader_field.contents(), main_type, sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
    prefix = first_shard.name.removesuffix(f"-00001-of-{shards:05d}.gguf")
    base = first_shard.with_name(f"{prefix}.gguf")
    writer.write_header_to_file(path=base)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    names = [first_shard.with_name(f"{prefix}-{n:05d}-of-{shards:05d}.gguf") for n in range(1, shards + 1)]
    assert all(p.is_file() for p in names), names
    return names


def write_transformers_checkpoint(folder: Path) -> Path:
    """config.json + safetensors written the way transformers does (metadata format "pt")."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file(
        {"model.embed_tokens.weight": np.zeros((4, 8), dtype=np.float32)},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return folder


def write_pytorch_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + bytes(64))
    return folder


def add_vision_config(mlx_folder: Path) -> Path:
    """Turn an MLX folder's config into a vision-language one (vision_config + text_config)."""
    config_path = mlx_folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    text = {k: v for k, v in config.items() if k not in ("architectures",)}
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "num_hidden_layers": 1}
    new = {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "text_config": text,
        "vision_config": vision,
    }
    config_path.write_text(json.dumps(new), encoding="utf-8")
    return mlx_folder


class FakeHfCache:
    """A Hugging Face hub cache: models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main}."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add_repo(self, repo_id: str, files: dict[str, Path], commit: str = "a" * 40) -> Path:
        """Copy `files` (name in the repo -> source file) into the cache; returns the snapshot folder."""
        repo = self.root / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        for name, source in files.items():
            data = source.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../" * (len(Path(name).parts) + 1), "blobs", blob.name))
        return snapshot

    def add_folder(self, repo_id: str, folder: Path, commit: str = "b" * 40) -> Path:
        return self.add_repo(repo_id, {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}, commit)


def copy_tree(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest
