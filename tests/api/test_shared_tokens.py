"""Two real API processes on one configuration share the tokens: one issued by the CLI works on
both, and a revocation by the CLI is refused by both from their next request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

GRAYWAVE = str(Path(sys.executable).with_name("graywave"))


@contextmanager
def api_process(log: Path) -> Iterator[str]:
    """``graywave api`` in a process of its own, on this test's environment; its URL once it answers."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen([GRAYWAVE, "api", "--port", str(port)], env=dict(os.environ), stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a generous start-up wait: imports on a loaded machine
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(30)


def cli(*arguments: str) -> str:
    done = subprocess.run([GRAYWAVE, *arguments], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("deployment", ["settings", "s3_settings"])
def test_a_token_works_on_every_api_process_and_a_revocation_reaches_each_at_once(
    request, deployment, tmp_path, monkeypatch
):
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    request.getfixturevalue(deployment)  # the environment of the embedded default, or of S3 + MongoDB
    with ExitStack() as stack:
        urls = [stack.enter_context(api_process(tmp_path / f"api{k}.log")) for k in range(2)]
        token = cli("token", "issue", "alice").strip()  # issued after both started
        headers = {"Authorization": f"Bearer {token}"}
        for url in urls:
            assert httpx.get(f"{url}/images/alice", headers=headers, timeout=30).status_code == 200
        [listed] = json.loads(cli("token", "list", "--json"))
        token_id = listed["token_id"]
        cli("token", "revoke", token_id)
        for url in urls:  # the next request of each: no cache to wait out
            refused = httpx.get(f"{url}/images/alice", headers=headers, timeout=30)
            assert refused.status_code == 401, refused.text
