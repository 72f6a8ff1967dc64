"""The demo package's modules import each other in one direction only: no cycle, no sibling imported inside a function.

Each module of `heylook_llm/demo/` is parsed with `ast`; every import of the package itself (`heylook_llm.demo`,
which is `__init__.py`) or of one of its modules, absolute or relative, at module level or inside a function, is
an edge of the graph checked here.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import heylook_llm.demo

pytestmark = pytest.mark.unit

PACKAGE = "heylook_llm.demo"
PACKAGE_DIR = Path(heylook_llm.demo.__file__).parent
INIT = "__init__"
MODULES = sorted(p.stem for p in PACKAGE_DIR.glob("*.py"))


def _target(dotted: str, name: str | None = None) -> str | None:
    """The package module an import refers to (`__init__` for the package itself), or None if outside it.

    `dotted` is the module named after `import` or `from`; `name` is one name imported from it, which may itself
    be a module (`from heylook_llm.demo import weights`, `from heylook_llm import demo`).
    """
    if name is not None:
        full = f"{dotted}.{name}"
        if full == PACKAGE:
            return INIT
        if full.startswith(PACKAGE + ".") and full[len(PACKAGE) + 1 :] in MODULES:
            return full[len(PACKAGE) + 1 :]
    if dotted == PACKAGE:
        return INIT
    if dotted.startswith(PACKAGE + "."):
        return dotted[len(PACKAGE) + 1 :].split(".")[0]
    return None


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(package module imported, whether the import sits inside a function) for each import of the package."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((t, in_function) for alias in node.names if (t := _target(alias.name)) is not None)
        elif isinstance(node, ast.ImportFrom):
            dotted = node.module or ""
            if node.level:
                # A relative import, resolved against this package (`.` is heylook_llm.demo, `..` heylook_llm).
                parts = PACKAGE.split(".")
                dotted = ".".join(parts[: len(parts) - node.level + 1] + ([dotted] if dotted else []))
            for alias in node.names:
                if (t := _target(dotted, alias.name)) is not None:
                    found.append((t, in_function))
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {
        module: _imports(ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))) for module in MODULES
    }


def test_the_package_holds_the_demo_modules_and_the_flat_modules_are_gone() -> None:
    assert {INIT, "tokenizer", "weights", "gguf_writer", "mlx_writer", "vision_mlx", "vision_gguf"} <= set(MODULES)
    for old in ("demo.py", "demo_mlx.py", "demo_vision.py", "demo_vision_gguf.py"):
        assert not (PACKAGE_DIR.parent / old).exists(), old


def test_the_import_finder_sees_every_form_of_import() -> None:
    source = (
        "import heylook_llm.demo.weights\n"
        "from heylook_llm.demo import tokenizer, ModelShape\n"
        "from . import files\n"
        "from .gguf_writer import write_llama_gguf\n"
        "from .. import demo\n"
        "from heylook_llm import demo as package, types\n"
        "from heylook_llm.demo.weights import Array\n"
        "import json\n"
        "def f():\n"
        "    from heylook_llm.demo.vision_mlx import VisionShape\n"
    )
    assert _imports(ast.parse(source)) == [
        ("weights", False),
        ("tokenizer", False),
        (INIT, False),
        ("files", False),
        ("gguf_writer", False),
        (INIT, False),
        (INIT, False),
        ("weights", False),
        ("vision_mlx", True),
    ]


def test_no_module_imports_a_sibling_inside_a_function() -> None:
    local = {module: sorted({t for t, in_function in edges if in_function}) for module, edges in _graph().items()}
    assert {module: targets for module, targets in local.items() if targets} == {}


def test_the_imports_between_the_modules_have_no_cycle() -> None:
    graph = {module: {t for t, _ in edges} for module, edges in _graph().items()}
    assert graph[INIT], "the package re-exports its modules' names, so __init__ imports them"
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle in {PACKAGE}: {' -> '.join(error.args[1])}")


def test_no_module_imports_the_package_itself() -> None:
    # The package's __init__ imports every writer; a module importing it back would close a cycle through it.
    importers = [module for module, edges in _graph().items() if module != INIT and any(t == INIT for t, _ in edges)]
    assert importers == []
