"""Folders and the Hugging Face cache to a list of models (importer/scan.py, hf_cache.py, naming.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from heylook_llm.importer.detect import FoundModel
from heylook_llm.importer.hf_cache import HfCacheError, hf_cache_groups
from heylook_llm.importer.naming import assign_ids
from heylook_llm.importer.scan import ScanResult, folder_group, scan
from tests.support.import_fixtures import (
    FakeHfCache,
    split_gguf,
    write_gguf,
    write_projector,
    write_transformers_checkpoint,
)

pytestmark = pytest.mark.unit


class RecordingProgress:
    def __init__(self) -> None:
        self.bars: list[tuple[str, int, bool]] = []
        self.advanced = 0

    def start(self, description: str, total: int, *, in_bytes: bool = False) -> None:
        self.bars.append((description, total, in_bytes))

    def advance(self, amount: int = 1) -> None:
        self.advanced += amount

    def finish(self) -> None:
        pass


def _by_name(result: ScanResult) -> dict[str, FoundModel]:
    return {m.name: m for m in result.models}


def _reasons(result: ScanResult) -> dict[str, str]:
    return {p.path.name: p.reason for p in result.skipped}


@pytest.fixture()
def model_folder(demo_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(demo_dir / "demo-gguf.gguf", root / "chat.gguf")
    shutil.copy(demo_dir / "demo-embed-gguf.gguf", root / "embed.gguf")
    (root / "link.gguf").symlink_to(root / "chat.gguf")
    shutil.copy(demo_dir / "demo-gguf.gguf", root / "copy-of-chat.gguf")
    (root / "notes.txt").write_text("not a model")
    (root / "fake.gguf").write_text("not a gguf either")
    write_gguf(root / "vision" / "vmodel.gguf", width=64)
    write_projector(root / "vision" / "mmproj-f16.gguf", projection_dim=64)
    write_projector(root / "vision" / "mmproj-q8.gguf", projection_dim=64, file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    write_gguf(root / "mismatch" / "wide.gguf", width=128)
    write_projector(root / "mismatch" / "mmproj.gguf", projection_dim=64)
    split_gguf(demo_dir / "demo-gguf.gguf", root / "split" / "big-00001-of-00003.gguf", 3)
    shutil.copytree(demo_dir / "demo-mlx", root / "mlx" / "demo-mlx")
    (root / "mlx-link").symlink_to(root / "mlx" / "demo-mlx", target_is_directory=True)
    (root / "mlx" / "loop").symlink_to(root, target_is_directory=True)
    write_transformers_checkpoint(root / "hf-checkpoint")
    return root


def test_folder_scan_finds_each_model_once(model_folder: Path) -> None:
    group, skipped = folder_group(model_folder)
    assert skipped == []
    progress = RecordingProgress()
    result = scan([group], progress)
    assert sorted(_by_name(result)) == ["big", "chat", "demo-mlx", "embed", "vmodel", "wide"]
    reasons = _reasons(result)
    assert "symlink" in reasons["link.gguf"]
    assert "copy" in reasons["copy-of-chat.gguf"] and "chat.gguf" in reasons["copy-of-chat.gguf"]
    assert "not a GGUF file" in reasons["fake.gguf"]
    assert "transformers checkpoint" in reasons["hf-checkpoint"]
    assert "notes.txt" not in reasons  # not named like weights: ignored without a word
    # the folder reached through a symlink (and the symlink loop) give nothing new
    assert [m.path for m in result.models if m.name == "demo-mlx"] == [model_folder / "mlx" / "demo-mlx"]
    assert not any("big-0000" in name for name in reasons)  # shards 2 and 3 belong to the model
    # one bar over the files, one over the bytes of the same-size models that had to be hashed
    assert progress.bars[0][0] == "reading model headers" and progress.bars[0][1] == len(group.files)
    hashing = [bar for bar in progress.bars if bar[2]]
    assert hashing and hashing[0][1] == 2 * (model_folder / "chat.gguf").stat().st_size


def test_projectors_pair_with_the_model_of_matching_width(model_folder: Path) -> None:
    group, _ = folder_group(model_folder)
    result = scan([group])
    models = _by_name(result)
    assert models["vmodel"].mmproj_path == model_folder / "vision" / "mmproj-f16.gguf"
    assert models["vmodel"].vision
    assert models["wide"].mmproj_path is None  # the projector beside it projects to 64, the model is 128 wide
    reasons = _reasons(result)
    assert "mmproj-f16.gguf was chosen" in reasons["mmproj-q8.gguf"]
    assert "no model of matching embedding length" in reasons["mmproj.gguf"]
    assert all(m.name not in ("mmproj-f16", "mmproj-q8", "mmproj") for m in result.models)


def test_an_orphan_shard_is_listed(demo_dir: Path, tmp_path: Path) -> None:
    parts = split_gguf(demo_dir / "demo-gguf.gguf", tmp_path / "m-00001-of-00002.gguf", 2)
    parts[0].unlink()
    group, _ = folder_group(tmp_path)
    result = scan([group])
    assert result.models == []
    assert "first shard is missing" in _reasons(result)["m-00002-of-00002.gguf"]


@pytest.fixture()
def hf_cache(demo_dir: Path, tmp_path: Path) -> Path:
    cache = FakeHfCache(tmp_path / "hub")
    q8 = write_gguf(tmp_path / "src" / "chat-Q8_0.gguf", width=64)
    f16 = write_gguf(tmp_path / "src" / "chat-F16.gguf", width=64, file_type=gguf.LlamaFileType.MOSTLY_F16)
    proj = write_projector(tmp_path / "src" / "mmproj-model-f16.gguf", projection_dim=64)
    cache.add_repo("org/chat-GGUF", {"chat-Q8_0.gguf": q8, "chat-F16.gguf": f16, "mmproj-model-f16.gguf": proj})
    cache.add_repo("org/single-GGUF", {"single.gguf": demo_dir / "demo-gguf.gguf"})
    parts = split_gguf(demo_dir / "demo-gguf.gguf", tmp_path / "src" / "split" / "big-00001-of-00002.gguf", 2)
    cache.add_repo("org/split-GGUF", {p.name: p for p in parts})
    cache.add_folder("mlx-community/demo-mlx-f32", demo_dir / "demo-mlx")
    cache.add_folder("org/plain-transformers", write_transformers_checkpoint(tmp_path / "src" / "hf"))
    (cache.root / "datasets--org--data" / "snapshots").mkdir(parents=True)
    return cache.root


def test_hf_cache_repos_become_readable_ids(hf_cache: Path) -> None:
    groups, skipped = hf_cache_groups(hf_cache)
    assert skipped == []
    assert [g.repo_id for g in groups] == [
        "mlx-community/demo-mlx-f32",
        "org/chat-GGUF",
        "org/plain-transformers",
        "org/single-GGUF",
        "org/split-GGUF",
    ]
    result = scan(groups)
    ids = dict(zip(assign_ids(result.models), result.models, strict=True))
    assert sorted(ids) == [
        "mlx-community/demo-mlx-f32",
        "org/chat-GGUF:F16",
        "org/chat-GGUF:Q8_0",
        "org/single-GGUF",
        "org/split-GGUF",
    ]
    for model in ids.values():
        # model_path is the snapshot's named link (llama.cpp finds shards by name), its identity the blob
        assert ("snapshots" in model.path.parts and model.resolved != model.path) or model.provider == "mlx"
    split = ids["org/split-GGUF"]
    assert split.path.name == "big-00001-of-00002.gguf" and split.shard_count == 2
    assert ids["org/chat-GGUF:Q8_0"].mmproj_path == ids["org/chat-GGUF:F16"].mmproj_path
    assert ids["org/chat-GGUF:Q8_0"].mmproj_path is not None
    assert ids["org/chat-GGUF:Q8_0"].mmproj_path.name == "mmproj-model-f16.gguf"
    assert ids["mlx-community/demo-mlx-f32"].provider == "mlx"
    assert any("transformers checkpoint" in s.reason for s in result.skipped)


def test_a_folder_holding_the_cache_points_at_hf_cache(hf_cache: Path) -> None:
    _, skipped = folder_group(hf_cache)
    assert skipped and all("--hf-cache" in s.reason for s in skipped)


def test_the_same_file_in_a_folder_and_the_cache_is_imported_once(hf_cache: Path, tmp_path: Path) -> None:
    groups, _ = hf_cache_groups(hf_cache)
    single = next(g for g in groups if g.repo_id == "org/single-GGUF").files[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "linked.gguf").symlink_to(single)
    folder, _ = folder_group(mine)
    result = scan([folder, *groups])
    assert sum(1 for m in result.models if m.resolved == single.resolve()) == 1


def test_missing_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HfCacheError, match="no Hugging Face cache"):
        hf_cache_groups(tmp_path / "nowhere")


def test_ids_stay_unique_and_kept_ids_stay(demo_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    write_gguf(a / "model.gguf")
    write_gguf(b / "model.gguf", context=8192)
    group_a, _ = folder_group(a)
    group_b, _ = folder_group(b)
    models = scan([group_a, group_b]).models
    assert assign_ids(models) == ["model", "model-2"]
    assert assign_ids(models, taken=["model"]) == ["model-2", "model-3"]
    assert assign_ids(models, taken=["model", "x"], kept=[None, "x"]) == ["model-2", "x"]


@pytest.mark.parametrize("how", ["copy", "symlink"])
def test_the_duplicate_kept_is_the_one_with_a_projector(tmp_path: Path, how: str) -> None:
    # "plain" is walked first, so keeping the first copy would lose the projector beside the second
    plain, vision = tmp_path / "plain" / "chat.gguf", tmp_path / "vision" / "chat.gguf"
    write_gguf(plain, width=64)
    vision.parent.mkdir()
    if how == "copy":
        shutil.copy(plain, vision)
    else:
        vision.symlink_to(plain)
    projector = write_projector(vision.parent / "mmproj-f16.gguf", projection_dim=64)
    group, _ = folder_group(tmp_path)
    result = scan([group])
    assert [(m.path, m.mmproj_path, m.vision) for m in result.models] == [(vision, projector, True)]
    skipped = {s.path: s.reason for s in result.skipped}
    assert str(vision) in skipped.pop(plain)
    assert skipped == {}  # in particular, the projector is not reported as unused
