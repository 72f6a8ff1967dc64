"""Every third-party module the server imports comes from a distribution the README's first command installs.

The first command installs `[project.dependencies]` only (no extras), so an import that only an extra provides
crashes a new user's first start while the test suite, which installs the test extra, passes.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_normalized(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]) for spec in specs}


def _guarded_lines(tree: ast.AST) -> set[int]:
    """Lines of imports inside a `try` that handles ImportError: optional by design, with a fallback."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        handled: list[str] = []
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            handled += [kind.id for kind in kinds if isinstance(kind, ast.Name)]
        if {"ImportError", "ModuleNotFoundError"} & set(handled):
            for statement in node.body:
                lines.update(sub.lineno for sub in ast.walk(statement) if isinstance(sub, ast.Import | ast.ImportFrom))
    return lines


def third_party_imports(root: Path) -> dict[str, set[str]]:
    """Top-level module -> files importing it, for every unguarded absolute import of a non-stdlib module."""
    own = {path.name for path in root.iterdir() if path.is_dir()}
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        guarded = _guarded_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if node.lineno in guarded:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in own or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(root)))
    return found


def test_every_runtime_import_is_a_declared_dependency() -> None:
    declared = _declared()
    providers = packages_distributions()
    imports = third_party_imports(SRC)
    assert "fastapi" in imports and "llama_cpp" in imports  # the walk sees the real imports
    undeclared = {
        module: sorted(files)
        for module, files in imports.items()
        if not {_normalized(dist) for dist in providers.get(module, [])} & declared
    }
    assert not undeclared, f"imported by src/ but not provided by [project.dependencies]: {undeclared}"


def test_the_walk_finds_an_undeclared_import_and_skips_guarded_ones(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "import os\nimport httpx\nfrom pkg import b\n"
        "def f():\n    try:\n        import turbojpeg\n    except ImportError:\n        return None\n"
    )
    (package / "b.py").write_text("from jsonschema import validate\n")
    assert third_party_imports(tmp_path) == {"httpx": {"pkg/a.py"}, "jsonschema": {"pkg/b.py"}}


def test_test_tools_are_not_runtime_dependencies() -> None:
    # The server must not need what only the tests use; the test extra must not be pulled into a user's install.
    assert not {"pytest", "openai", "ollama", "mypy", "ruff"} & _declared()
    assert {"pytest", "openai", "ollama"} <= _declared("test")
