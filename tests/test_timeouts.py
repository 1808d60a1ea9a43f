"""No test waits on a library's default timeout for a server that the tests started: httpx's 5 s and
Playwright's 30 s were exceeded on a loaded machine (a presigned GET from SeaweedFS, a Prefect UI page
in Chromium, beside two CPU hogs). Each such wait names its figure (``tests.helpers.SERVER_TIMEOUT_S``
unless the test means a shorter one)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
HTTPX_CALLS = {"get", "post", "put", "patch", "delete", "head", "request", "stream", "Client", "AsyncClient"}


def calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def keywords(call: ast.Call) -> set[str | None]:
    return {keyword.arg for keyword in call.keywords}


def test_every_httpx_request_to_a_server_names_its_timeout():
    """An in-process client (an ASGI transport) has no network to wait on and needs none."""
    without = [
        f"{path.relative_to(TESTS)}:{call.lineno}"
        for path in sorted(TESTS.rglob("*.py"))
        for call in calls(path)
        if isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "httpx"
        and call.func.attr in HTTPX_CALLS
        and not keywords(call) & {"timeout", "transport", "mounts"}
    ]
    assert without == []


def test_every_browser_page_has_a_default_timeout_of_its_own():
    pages = [
        path for path in sorted(TESTS.rglob("*.py")) if path != Path(__file__) and ".new_page(" in path.read_text()
    ]
    assert pages, "the Prefect UI's test opens pages in Chromium"
    without = [
        str(path.relative_to(TESTS))
        for path in pages
        if not any(
            isinstance(call.func, ast.Attribute) and call.func.attr == "set_default_timeout" for call in calls(path)
        )
    ]
    assert without == []


def test_every_schemathesis_run_names_its_request_timeout():
    """Schemathesis's own is 10 s: beside two CPU hogs a GET of the live API exceeded it ("Network Error")."""
    runs = [
        path
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__) and 'with_name("schemathesis")' in path.read_text()
    ]
    assert runs, "the fuzz test runs Schemathesis's command"
    assert [str(path.relative_to(TESTS)) for path in runs if '"--request-timeout"' not in path.read_text()] == []
