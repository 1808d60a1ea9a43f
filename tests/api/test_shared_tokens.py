"""Two real API processes on one configuration share the tokens: one issued by the CLI works on
both, and a revocation by the CLI is refused by both once ``RECENT_S`` has passed."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from graywave.service.identity import RECENT_S
from tests.helpers import GRAYWAVE, free_port


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
def test_a_token_works_on_every_api_process_and_a_revocation_reaches_each_within_recent_s(
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
        time.sleep(RECENT_S)  # what a process remembers of a token it accepted (issue 22: within 1 s)
        for url in urls:
            refused = httpx.get(f"{url}/images/alice", headers=headers, timeout=30)
            assert refused.status_code == 401, refused.text


@pytest.mark.timeout(300)
@pytest.mark.parametrize("deployment", ["settings", "s3_settings"])
def test_a_retried_upload_is_stored_once_whichever_api_process_answers_each_try(
    request, deployment, tmp_path, monkeypatch
):
    """A phone whose upload timed out retries it with the same Idempotency-Key, and the load balancer
    sends the retry to another process: each upload below is sent to both processes at the same
    moment, then again to each. Every key ends as one stored image, the same answer from both."""
    from tests.api.test_api import PHOTO

    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    request.getfixturevalue(deployment)
    keys = [f"phone-retry-{n}" for n in range(8)]
    with ExitStack() as stack:
        urls = [stack.enter_context(api_process(tmp_path / f"api{k}.log")) for k in range(2)]
        headers = {"Authorization": f"Bearer {cli('token', 'issue', 'alice').strip()}"}
        clients = [stack.enter_context(httpx.Client(base_url=url, headers=headers, timeout=120)) for url in urls]

        def send(client: httpx.Client, key: str) -> httpx.Response:
            files = {"file": (f"{key}.jpg", PHOTO, "image/jpeg")}
            return client.post("/images/alice", params={"wait": True}, files=files, headers={"Idempotency-Key": key})

        with ThreadPoolExecutor(len(keys) * 2) as pool:  # each key to both processes at once
            raced = list(pool.map(lambda job: send(*job), [(client, key) for key in keys for client in clients]))
        # 409: the key is being answered by the other process; 429: alice's requests in flight there
        # (GRAYWAVE_API_USER_INFLIGHT), a refusal that keeps nothing, the key included
        assert all(r.status_code in (200, 409, 429) for r in raced), [r.text for r in raced]
        assert any(r.status_code == 200 for r in raced)
        answers: dict[str, set[str]] = {}
        for key in keys:  # the retries, until neither process is still answering the first try
            for client in clients:
                deadline = time.monotonic() + 60
                while (answer := send(client, key)).status_code == 409:
                    assert time.monotonic() < deadline, answer.text
                    time.sleep(float(answer.headers["Retry-After"]) / 4)
                assert answer.status_code == 200, answer.text
                answers.setdefault(key, set()).add(answer.json()["image_id"])
        assert all(len(ids) == 1 for ids in answers.values()), answers  # one answer per key, from both
        for client in clients:  # each process reads the same images: one per key, none twice
            listed = client.get("/images/alice", params={"limit": 100}).json()
            assert listed["total"] == len(keys)
            assert {item["image_id"] for item in listed["items"]} == set().union(*answers.values())
