"""The API under a real uvicorn server on 127.0.0.1, on the embedded default and on S3 + MongoDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from graywave.api.app import create_app
from graywave.config import Settings
from graywave.service.tokens import issue_token
from tests.conftest import free_port


@dataclass
class Api:
    url: str
    settings: Settings
    tokens: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(params=["embedded", "s3+mongodb"])
def api(request, tmp_path, monkeypatch) -> Iterator[Api]:
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setenv("GRAYWAVE_MAX_UPLOAD_BYTES", "2000000")
    settings: Settings = request.getfixturevalue("settings" if request.param == "embedded" else "s3_settings")
    tokens = {
        "alice": issue_token(settings.api_tokens_file, "alice", admin=False),
        "bob": issue_token(settings.api_tokens_file, "bob", admin=False),
        "admin": issue_token(settings.api_tokens_file, "ops", admin=True),
    }
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield Api(f"http://127.0.0.1:{port}", settings, tokens)
    server.should_exit = True
    thread.join(timeout=30)
