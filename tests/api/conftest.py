"""The API's two test fixtures, each on the embedded default and on S3 + MongoDB (real SeaweedFS and
SecantusDB servers in both):

- ``api``: the app in this process, reached through ``httpx.ASGITransport`` (an ``httpx.AsyncClient``;
  the tests are ``async``), its lifespan run as uvicorn runs it. For everything the app itself answers:
  routes, errors, access rules, the stores behind them.
- ``live_api``: the app under a real uvicorn server on 127.0.0.1 (a sync ``httpx.Client``). Only for what
  needs a socket and a server: concurrent clients and the server's threads, slow or streaming clients,
  uvicorn's ``--root-path``, client timeouts on a request that could hang, and the tools that take a URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from graywave.cli.asgi import create_app
from graywave.config import Settings
from graywave.service.tokens import issue_token
from tests.helpers import Api, InProcessApi, api_app, in_process, serving

DEPLOYMENTS = ["embedded", "s3+mongodb"]


@pytest.fixture
def anyio_backend() -> str:
    """The ``async`` tests run on asyncio, uvicorn's loop."""
    return "asyncio"


@pytest.fixture
def reprocess_inside_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reprocessing inside the request however many images there are (these servers have no Prefect
    server for background jobs). Name it in ``usefixtures``, which come before ``live_api``."""
    monkeypatch.setenv("GRAYWAVE_API_INLINE_REPROCESS_MAX", "100000")


def _deployment(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> tuple[Settings, dict[str, str]]:
    """The settings of the deployment ``request.param`` names, and tokens of alice, bob and admin."""
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setenv("GRAYWAVE_MAX_UPLOAD_BYTES", "2000000")
    settings: Settings = request.getfixturevalue("settings" if request.param == "embedded" else "s3_settings")
    tokens = {
        "alice": issue_token(settings, "alice", admin=False),
        "bob": issue_token(settings, "bob", admin=False),
        "admin": issue_token(settings, "ops", admin=True),
    }
    return settings, tokens


@pytest.fixture(params=DEPLOYMENTS)
def live_api(request, tmp_path, monkeypatch) -> Iterator[Api]:
    settings, tokens = _deployment(request, tmp_path, monkeypatch)
    with serving(create_app(settings)) as url:
        yield Api(url, settings, tokens)


@pytest.fixture(params=DEPLOYMENTS)
async def api(request, tmp_path, monkeypatch) -> AsyncIterator[InProcessApi]:
    """The app that ``live_api`` serves (``graywave api``'s), in this process."""
    settings, tokens = _deployment(request, tmp_path, monkeypatch)
    async with in_process(api_app(settings)) as app:
        served = InProcessApi(app, settings, tokens)
        yield served
        await served.aclose()
