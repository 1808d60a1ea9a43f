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
    # The API and the command line reach the storage through the service, never directly: its terms
    # (service.terms, service.uploads, service.tables) and its use cases.
    "graywave.api": FOUNDATION | {"graywave.config", "graywave.kernels", "graywave.service", "graywave.api"},
    # The command line is the composition root: it runs the flows, and builds the API's app with the
    # flows' job runner (cli.asgi, which only uvicorn imports: the commands name it as a string).
    "graywave.cli": FOUNDATION
    | {"graywave.config", "graywave.kernels", "graywave.service", "graywave.flows", "graywave.api", "graywave.cli"},
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


def is_module(name: str) -> bool:
    """Whether ``graywave.<name>`` is a module (a layer or a root module), not a name (``__version__``)."""
    return name in SUBPACKAGES or (ROOT / "graywave" / f"{name}.py").exists()


def all_imports(path: Path) -> set[str]:
    """Every module that ``path`` imports: at module level, in functions, under ``TYPE_CHECKING``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: a relative import hides which layer it reaches; import graywave.*"
            found.add(node.module or "")
            if node.module == "graywave":  # from graywave import storage, config: the modules themselves
                found |= {f"graywave.{alias.name}" for alias in node.names if is_module(alias.name)}
    return found


def imports(path: Path) -> set[str]:
    return {name for name in all_imports(path) if name == "graywave" or name.startswith("graywave.")}


# The frameworks stay in their layer: Prefect in the flows (and the CLI, which runs them and Prefect's
# server), HTTP in the API, the command line's framework in the CLI.
FRAMEWORKS = {
    "prefect": {"flows", "cli"},
    "prefect_dask": {"flows", "cli"},
    "fastapi": {"api"},
    "starlette": {"api"},
    "typer": {"cli"},
}


def framework_imports(folder: str, root: Path = ROOT) -> set[str]:
    """``path imports framework`` for each module under ``root / folder`` that imports a framework
    (any of its modules) that ``folder``'s layer may not use."""
    return {
        f"{path.relative_to(root).as_posix()} imports {name}"
        for path in sorted((root / folder).rglob("*.py"))
        for name in all_imports(path)
        if (framework := name.split(".")[0]) in FRAMEWORKS and folder not in FRAMEWORKS[framework]
    }


def wrong_imports(folder: str, root: Path = ROOT) -> set[str]:
    """``path imports module`` for each graywave module that a module under ``root / folder``
    imports and ``folder``'s layer may not use."""
    return {
        f"{path.relative_to(root).as_posix()} imports {name}"
        for path in sorted((root / folder).rglob("*.py"))
        for name in imports(path)
        if layer_of(name) not in ALLOWED[FOLDERS[folder]]
    }


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_each_layer_imports_only_the_layers_below_it(folder):
    assert sorted((ROOT / folder).rglob("*.py"))
    assert not wrong_imports(folder)


def test_the_api_and_the_cli_reach_the_storage_through_the_service(tmp_path):
    """A storage import in the API or the CLI fails the rule, wherever it is: at module level, in a
    function, under ``TYPE_CHECKING``, as ``import graywave.storage...`` or ``from graywave import storage``."""
    for folder in ("api", "cli"):
        assert "graywave.storage" not in ALLOWED[FOLDERS[folder]]
        (tmp_path / folder / "routers").mkdir(parents=True)
        (tmp_path / folder / "routers" / "reads.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "import graywave.storage.blobs\n"
            "if TYPE_CHECKING:\n    from graywave.storage.lake import Lake\n"
            "def read():\n    from graywave.storage.layout import upload_key\n"
            "from graywave.service.terms import upload_key\n"
            "from graywave import __version__, config, storage\n"
        )
        assert wrong_imports(folder, tmp_path) == {
            f"{folder}/routers/reads.py imports graywave.storage.blobs",
            f"{folder}/routers/reads.py imports graywave.storage.lake",
            f"{folder}/routers/reads.py imports graywave.storage.layout",
            f"{folder}/routers/reads.py imports graywave.storage",
        }


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_each_layer_imports_only_its_own_frameworks(folder):
    assert not framework_imports(folder)


def test_only_the_apps_factory_of_the_cli_imports_the_api():
    """The commands name the API's app to uvicorn as a string (``cli.serving``); only the factory
    that uvicorn imports (``cli.asgi``) builds it, so the CLI's start-up loads no API code."""
    importers = {
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "cli").rglob("*.py"))
        if any(layer_of(name) == "graywave.api" for name in imports(path))
    }
    assert importers == {"cli/asgi.py"}


def test_the_framework_check_sees_a_framework_in_the_wrong_layer(tmp_path):
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "uses.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import fastapi.responses\n"
        "if TYPE_CHECKING:\n    from prefect.client.schemas.objects import FlowRun\n"
        "def start():\n    from prefect_dask import DaskTaskRunner\n    import typer\n"
        "import prefecture, numpy\n"
    )
    assert framework_imports("service", tmp_path) == {
        "service/uses.py imports fastapi.responses",
        "service/uses.py imports prefect.client.schemas.objects",
        "service/uses.py imports prefect_dask",
        "service/uses.py imports typer",
    }
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "fine.py").write_text("import prefect\nfrom prefect_dask import DaskTaskRunner\n")
    assert framework_imports("flows", tmp_path) == set()


def test_the_check_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from graywave.api.app import create_app\nimport graywave.config\n")
    assert {layer_of(name) for name in imports(bad)} == {"graywave.api", "graywave.config"}
    assert "graywave.api" not in ALLOWED["graywave.flows"] and "graywave.config" not in ALLOWED["graywave.storage"]


def prefect_things(folder: str, root: Path = ROOT) -> set[str]:
    """What of the Prefect UI a module under ``root / folder`` holds: a function or method that renders
    Markdown (the artifacts' text), or one of the names Prefect knows graywave's jobs by
    (``flows.names``: deployments, artifact keys)."""
    from graywave.flows import names

    prefect_names = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)}
    found = set()
    for path in sorted((root / folder).rglob("*.py")):
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "markdown" in node.name.lower():
                found.add(f"{where} renders Markdown: {node.name}")
            elif isinstance(node, ast.Constant) and node.value in prefect_names:
                found.add(f"{where} names {node.value!r}")
    return found


def test_the_prefect_uis_names_and_markdown_live_in_the_flows(tmp_path):
    assert not prefect_things("service")
    assert prefect_things("flows")  # where they are: flows.names and flows.markdown
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "summary.py").write_text(
        "JOB = 'graywave-reprocess/reprocess'\n"
        "class Summary:\n    def markdown(self): return '# summary'\n"
        "def median_markdown(day): return 'reprocess-failures'\n"
    )
    assert prefect_things("service", tmp_path) == {
        "service/summary.py names 'graywave-reprocess/reprocess'",
        "service/summary.py names 'reprocess-failures'",
        "service/summary.py renders Markdown: markdown",
        "service/summary.py renders Markdown: median_markdown",
    }


def threaded_parameters(folder: str = "service", root: Path = ROOT) -> set[str]:
    """The public functions and methods under ``root / folder`` whose first two parameters (after
    ``self`` or ``cls``) are the backends and the settings, by name or by annotation (``Backends``,
    ``Settings``): what the service objects (``Graywave(settings)``) hold once instead."""

    def kind(parameter: ast.arg) -> str:
        annotation = parameter.annotation
        named = ast.unparse(annotation).rsplit(".", 1)[-1].strip("'\"") if annotation is not None else ""
        if parameter.arg == "backends" or named == "Backends":
            return "backends"
        if parameter.arg == "settings" or named == "Settings":
            return "settings"
        return ""

    found = set()
    for path in sorted((root / folder).rglob("*.py")):
        where = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        methods = {
            id(node)
            for klass in ast.walk(tree)
            if isinstance(klass, ast.ClassDef)
            for node in klass.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
                continue
            parameters = [*node.args.posonlyargs, *node.args.args]
            if id(node) in methods and parameters and parameters[0].arg in {"self", "cls"}:
                parameters = parameters[1:]
            if [kind(parameter) for parameter in parameters[:2]] == ["backends", "settings"]:
                found.add(f"{where}: {node.name}")
    return found


def test_no_public_service_function_takes_the_backends_and_the_settings(tmp_path):
    """Issue 23: the service's use cases are reached through objects built once from the settings
    (``Graywave(settings).images``...), not by threading ``(backends, settings)`` through every call."""
    assert not threaded_parameters("service")
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "threaded.py").write_text(
        "def store(backends, settings, data): ...\n"
        "def typed(store: Backends, config: 'Settings'): ...\n"
        "def _private(backends, settings): ...\n"
        "def other_order(settings, backends): ...\n"
        "class Images:\n"
        "    def __init__(self, backends, settings): ...\n"
        "    def delete(self, backends, settings, entries): ...\n"
        "    def get(self, today, user_id): ...\n"
    )
    assert threaded_parameters("service", tmp_path) == {
        "service/threaded.py: store",
        "service/threaded.py: typed",
        "service/threaded.py: delete",
    }
