"""The API under a real uvicorn server on 127.0.0.1, on the embedded default and on S3 + MongoDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from graywave.cli.asgi import create_app
from graywave.config import Settings
from graywave.service.tokens import issue_token
from tests.helpers import Api, serving


@pytest.fixture
def reprocess_inside_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reprocessing inside the request however many images there are (these servers have no Prefect
    server for background jobs). Name it in ``usefixtures``, which come before ``api``."""
    monkeypatch.setenv("GRAYWAVE_API_INLINE_REPROCESS_MAX", "100000")


@pytest.fixture(params=["embedded", "s3+mongodb"])
def api(request, tmp_path, monkeypatch) -> Iterator[Api]:
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setenv("GRAYWAVE_MAX_UPLOAD_BYTES", "2000000")
    settings: Settings = request.getfixturevalue("settings" if request.param == "embedded" else "s3_settings")
    tokens = {
        "alice": issue_token(settings, "alice", admin=False),
        "bob": issue_token(settings, "bob", admin=False),
        "admin": issue_token(settings, "ops", admin=True),
    }
    with serving(create_app(settings)) as url:
        yield Api(url, settings, tokens)
