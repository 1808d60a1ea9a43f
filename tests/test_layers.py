"""Dependencies point one way (CONTRIBUTING.md, "Layout"): read every module's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FOUNDATION = {"graywave", "graywave.errors", "graywave.records"}
ALLOWED = {
    "graywave": FOUNDATION,  # config, errors, records: the foundation every layer may use
    "graywave.kernels": FOUNDATION | {"graywave.kernels"},
    "graywave.storage": FOUNDATION | {"graywave.storage"},
    "graywave.service": FOUNDATION | {"graywave.config", "graywave.kernels", "graywave.storage", "graywave.service"},
    "graywave.flows": FOUNDATION
    | {"graywave.config", "graywave.kernels", "graywave.storage", "graywave.service", "graywave.flows"},
    "graywave.api": FOUNDATION
    | {"graywave.config", "graywave.kernels", "graywave.storage", "graywave.service", "graywave.api"},
    # The command line is the composition root: it runs the flows; the API it only names to uvicorn.
    "graywave.cli": FOUNDATION
    | {"graywave.config", "graywave.kernels", "graywave.storage", "graywave.service", "graywave.flows", "graywave.cli"},
}
SUBPACKAGES = {"kernels", "storage", "service", "flows", "api", "cli"}
FOLDERS = {
    "graywave": "graywave",
    "kernels": "graywave.kernels",
    "storage": "graywave.storage",
    "service": "graywave.service",
    "flows": "graywave.flows",
    "api": "graywave.api",
    "cli": "graywave.cli",
}


def layer_of(module: str) -> str:
    """``graywave.service.wave`` -> ``graywave.service``; a root module (``graywave.config``) is its own."""
    parts = module.split(".")
    return f"graywave.{parts[1]}" if len(parts) > 1 and parts[1] in SUBPACKAGES else module


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: a relative import hides which layer it reaches; import graywave.*"
            found.add(node.module or "")
    return {name for name in found if name == "graywave" or name.startswith("graywave.")}


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_each_layer_imports_only_the_layers_below_it(folder):
    layer = FOLDERS[folder]
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imports(path)
        if layer_of(name) not in ALLOWED[layer]
    }
    assert not wrong


def test_the_check_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from graywave.api.app import create_app\nimport graywave.config\n")
    assert {layer_of(name) for name in imports(bad)} == {"graywave.api", "graywave.config"}
    assert "graywave.api" not in ALLOWED["graywave.flows"] and "graywave.config" not in ALLOWED["graywave.storage"]
