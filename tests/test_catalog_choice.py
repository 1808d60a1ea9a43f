"""The catalog is chosen once (issue 23): the service never asks which one it has (read every line
of ``service/``, as the layer test reads every import)."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


CATALOG_BRANCH = re.compile(r"\bcatalog\s+is\s+(?:not\s+)?None\b")


def catalog_branches(folder: Path) -> list[str]:
    """Lines of ``folder``'s modules that ask whether there is a catalog (``catalog is None``)."""
    return [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(folder.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if CATALOG_BRANCH.search(line)
    ]


def test_the_service_never_asks_which_catalog_it_has():
    """MongoDB-or-lake is chosen once, in ``Backends.open`` (issue 23): the service goes through the
    ``Catalog`` interface and never branches on ``catalog is None``."""
    assert not catalog_branches(ROOT / "service")


def test_the_catalog_check_sees_a_branch(tmp_path):
    (tmp_path / "a.py").write_text("if backends.catalog is not None:\n    pass\nif catalog  is None: pass\nok = 1\n")
    assert catalog_branches(tmp_path) == [
        "a.py:1: if backends.catalog is not None:",
        "a.py:3: if catalog  is None: pass",
    ]
