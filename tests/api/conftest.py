"""The API under a real uvicorn server on 127.0.0.1, on the embedded default and on S3 + MongoDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from graywave.api.app import create_app
from graywave.config import Settings
from graywave.service.tokens import issue_token
from tests.helpers import free_port


@dataclass
class Api:
    url: str
    settings: Settings
    tokens: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


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


@contextmanager
def serving(app: FastAPI, root_path: str = "") -> Iterator[str]:
    """``app`` under a real uvicorn server on 127.0.0.1 (``root_path``: uvicorn's ``--root-path``); its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", root_path=root_path)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
