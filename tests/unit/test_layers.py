"""The layering rules of the architecture page, checked on the import statements of src/.

Each layer may import only the layers below it, and the dialects reach the engine only through its façade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "heylook_llm"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "backends": ("heylook_llm.api", "heylook_llm.engine", "fastapi", "starlette"),
    "config": ("heylook_llm.api", "heylook_llm.engine", "heylook_llm.backends", "fastapi"),
    "engine": ("heylook_llm.api", "fastapi", "starlette"),
    # Dialects talk to the engine façade, never to its router, worker, leases or the backends.
    "api": (
        "heylook_llm.backends",
        "heylook_llm.engine.router",
        "heylook_llm.engine.worker",
        "heylook_llm.engine.generation",
        # Upstream models are reached through the façade too (Engine.generate, upstream_status, remote).
        "heylook_llm.engine.upstream",
    ),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_is_below_it(layer: str) -> None:
    broken = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])
    ]
    assert not broken, broken


def test_dialects_do_not_import_each_other() -> None:
    dialects = ["openai", "ollama"]
    broken = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for dialect in dialects
        for path in sorted((PACKAGE / "api" / dialect).rglob("*.py"))
        for name in _imports(path)
        for other in dialects
        if other != dialect and name.startswith(f"heylook_llm.api.{other}")
    ]
    assert not broken, broken
