"""`models list` / `models validate` logic and the memory estimates (importer/manage.py, memory.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heylook_llm.config.registry import load_registry
from heylook_llm.importer.detect import FoundModel, KvShape, detect_folder, detect_gguf
from heylook_llm.importer.manage import model_rows, validate_file
from heylook_llm.importer.memory import MemoryEstimate, estimate, estimate_entry, fit_warning, kv_cache_bytes
from heylook_llm.importer.profiles import PROFILES, plan_entry
from tests.support.import_fixtures import split_gguf

pytestmark = pytest.mark.unit


def test_rows_list_id_provider_size_capabilities_enabled(demo_dir: Path, tmp_path: Path) -> None:
    parts = split_gguf(demo_dir / "demo-gguf.gguf", tmp_path / "s-00001-of-00002.gguf", 2)
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""models:
  - {{id: chat, provider: llama_cpp, config: {{model_path: {demo_dir}/demo-gguf.gguf, mmproj_path: x.gguf}}}}
  - {{id: embed, provider: llama_cpp, enabled: false, config: {{model_path: {demo_dir}/demo-embed-gguf.gguf,
      embedding: true}}}}
  - {{id: mlx, provider: mlx, config: {{model_path: {demo_dir}/demo-mlx, vision: true}}}}
  - {{id: split, provider: llama_cpp, config: {{model_path: {parts[0]}}}}}
  - {{id: gone, provider: mlx, config: {{model_path: /no/such/folder}}}}
"""
    )
    rows = {r.id: r for r in model_rows(load_registry(config))}
    assert rows["chat"].capabilities == ("completion", "vision", "tools")
    assert rows["chat"].size_bytes == (demo_dir / "demo-gguf.gguf").stat().st_size
    assert (rows["embed"].capabilities, rows["embed"].enabled) == (("embedding",), False)
    assert rows["mlx"].capabilities == ("completion", "vision")
    assert rows["mlx"].size_bytes == sum(p.stat().st_size for p in (demo_dir / "demo-mlx").iterdir())
    assert rows["split"].size_bytes == sum(p.stat().st_size for p in parts)
    assert rows["gone"].size_bytes is None


def test_validate_lists_schema_and_file_problems_with_model_and_field(demo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "text.gguf").write_text("not gguf")
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""models:
  - {{id: good, provider: llama_cpp, config: {{model_path: {demo_dir}/demo-gguf.gguf}}}}
  - {{id: typo, provider: llama_cpp, config: {{model_path: {demo_dir}/demo-gguf.gguf, n_cxt: 5}}}}
  - {{id: missing, provider: llama_cpp, config: {{model_path: nowhere.gguf}}}}
  - {{id: wrong-kind, provider: llama_cpp, config: {{model_path: text.gguf}}}}
  - {{id: not-a-folder, provider: mlx, config: {{model_path: {demo_dir}/demo-gguf.gguf}}}}
  - {{id: unplugged, provider: mlx, enabled: false, config: {{model_path: /unplugged/disk}}}}
"""
    )
    registry, problems = validate_file(config)
    assert registry is None
    assert any("model 'typo'" in p and "config.n_cxt" in p and "did you mean 'n_ctx'" in p for p in problems)
    assert any("model 'missing'" in p and "config.model_path" in p and "does not exist" in p for p in problems)
    assert any("model 'wrong-kind'" in p and "not a GGUF file" in p for p in problems)
    assert any("model 'not-a-folder'" in p and "not a folder" in p for p in problems)
    assert not any("'unplugged'" in p for p in problems)  # disabled entries may point at absent files
    assert len(problems) == 4


def test_validate_accepts_the_demo_models(demo_dir: Path) -> None:
    registry, problems = validate_file(demo_dir / "models.yaml")
    assert problems == [] and registry is not None


def test_validate_reports_unreadable_and_broken_yaml(tmp_path: Path) -> None:
    assert "cannot read" in validate_file(tmp_path / "absent.yaml")[1][0]
    (tmp_path / "bad.yaml").write_text("models: [\n")
    assert "not valid YAML" in validate_file(tmp_path / "bad.yaml")[1][0]


def test_kv_cache_bytes() -> None:
    kv = KvShape(values_per_token=1000, head_dim=64, element_bytes=2)
    assert kv_cache_bytes(kv, 4096) == 1000 * 4096 * 2
    # 4 bits per value plus a 2-byte scale and bias per 64 values
    assert kv_cache_bytes(kv, 4096, kv_bits=4, group_size=64) == int(1000 * 4096 * (0.5 + 4 / 64))
    assert kv_cache_bytes(None, 4096) == 0


def test_estimates_follow_the_profile(demo_dir: Path) -> None:
    found = detect_gguf(demo_dir / "demo-gguf.gguf")
    assert isinstance(found, FoundModel) and found.kv is not None
    memory = plan_entry(found, "m", PROFILES["memory"], [])
    quality = plan_entry(found, "m", PROFILES["quality"], [])
    small = estimate("m", found, memory.config, memory.context)
    large = estimate("m", found, quality.config, quality.context)
    assert small.weights_bytes == large.weights_bytes == found.size_bytes
    assert small.kv_bytes == found.kv.values_per_token * 2048 * 1 * 2  # n_ctx 2048 x 1 slot x f16
    assert large.kv_bytes == found.kv.values_per_token * 2048 * 2 * 2  # trained 2048 x 2 slots
    mlx = detect_folder(demo_dir / "demo-mlx")
    assert isinstance(mlx, FoundModel)
    rotating = plan_entry(mlx, "x", PROFILES["memory"], [])
    assert estimate("x", mlx, rotating.config, rotating.context).kv_tokens == 2048


def test_estimate_entry_reads_the_files(demo_dir: Path, tmp_path: Path) -> None:
    shutil.copy(demo_dir / "models.yaml", tmp_path / "models.yaml")
    for name in ("demo-gguf.gguf", "demo-embed-gguf.gguf"):
        (tmp_path / name).symlink_to(demo_dir / name)
    (tmp_path / "demo-mlx").symlink_to(demo_dir / "demo-mlx")
    registry = load_registry(tmp_path / "models.yaml")
    estimates = {e.id: estimate_entry(e, 1000) for e in registry.models}
    gguf = estimates["demo-gguf"]
    assert gguf is not None and gguf.kv_tokens == 2048 * 4  # n_ctx 2048, the default 4 slots
    mlx = estimates["demo-mlx"]
    slots = getattr(registry.get("demo-mlx").config, "parallel", 1)  # type: ignore[union-attr]
    assert mlx is not None and mlx.kv_tokens == 1000 * slots  # a standard cache per batched request


def test_fit_warning_names_the_largest_models() -> None:
    estimates = [MemoryEstimate(name, size, 0, 0) for name, size in (("a", 6 * 10**9), ("b", 5 * 10**9), ("c", 10))]
    assert fit_warning(estimates, 2, 12 * 10**9) is None
    warning = fit_warning(estimates, 2, 10 * 10**9)
    assert warning is not None and "a (6.0 GB), b (5.0 GB)" in warning and "11.0 GB" in warning
    assert fit_warning(estimates, 1, 5 * 10**9) is not None
    assert fit_warning(estimates, 2, None) is None
