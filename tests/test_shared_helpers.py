"""The tests' shared helpers are defined once, in ``tests/helpers.py``, and imported from there."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
HELPERS = TESTS / "helpers.py"


def modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if path != HELPERS)


def top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def imported_modules(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_test_imports_a_conftest_module():
    importing = {
        str(path.relative_to(TESTS)): sorted(
            name for name in imported_modules(ast.parse(path.read_text())) if name.endswith("conftest")
        )
        for path in modules()
    }
    assert {path: names for path, names in importing.items() if names} == {}


def test_no_module_redefines_a_shared_helper():
    shared = {name for name in top_level_names(ast.parse(HELPERS.read_text())) if not name.startswith("_")}
    assert {"DAY", "Clock", "free_port", "image_record", "sample_photo"} <= shared
    redefined = {
        str(path.relative_to(TESTS)): sorted(shared & top_level_names(ast.parse(path.read_text())))
        for path in modules()
    }
    assert {path: names for path, names in redefined.items() if names} == {}
