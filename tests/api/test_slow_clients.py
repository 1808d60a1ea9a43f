"""Slow clients are cut off (``api.timeouts``): a raw socket that sends one byte a second, in the
headers or in the body, gets 408 and a closed connection within the deadline, and nothing is
stored. The API is served as ``graywave api`` serves it (``http=API_HTTP_PROTOCOL``, uvicorn's h11
protocol with a header deadline: ``api.timeouts.SlowClientCutoff``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from graywave.api.app import create_app
from graywave.cli.main import API_HTTP_PROTOCOL
from tests.api.test_api import PHOTO, upload
from tests.helpers import serving

EMBEDDED = pytest.mark.parametrize("live_api", ["embedded"], indirect=True)
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
CUT_OFF_WITHIN_S = 15.0
"""The deadlines are 2 s; a loaded machine may be late by seconds, never by the minute a trickle takes."""
TRICKLE_S = 60.0


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAYWAVE_API_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))
    monkeypatch.setenv("GRAYWAVE_API_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))
    monkeypatch.setenv("GRAYWAVE_API_BODY_MIN_RATE", "1000")


@dataclass
class Served:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serving_as_the_cli_does(settings) -> Iterator[Served]:
    with serving(create_app(settings), http=API_HTTP_PROTOCOL) as url:
        yield Served("127.0.0.1", int(url.rsplit(":", 1)[1]))


@pytest.fixture
def served(short_deadlines, live_api) -> Iterator[Served]:
    """A second server of the ``live_api`` fixture's deployment (its tokens), with the CLI's protocol."""
    with serving_as_the_cli_does(live_api.settings) as found:
        yield found


@dataclass
class Trickled:
    answer: bytes
    sent: int
    elapsed_s: float


def trickle(served: Served, prefix: bytes, slow: bytes) -> Trickled:
    """Send ``prefix`` at once, then ``slow`` one byte a second until the server closes the
    connection (or ``TRICKLE_S`` pass); what the server answered, and how long it took."""
    began = time.monotonic()
    sent = 0
    answer = b""
    with socket.create_connection((served.host, served.port), timeout=5) as sock:
        if prefix:
            sock.sendall(prefix)
        while time.monotonic() - began < TRICKLE_S:
            sock.settimeout(1.0)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                chunk = None
            except ConnectionResetError:
                break
            if chunk == b"":
                break  # closed by the server
            if chunk:
                answer += chunk
                continue
            if sent < len(slow):
                try:
                    sock.sendall(slow[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
    return Trickled(answer, sent, time.monotonic() - began)


def _cut_off(result: Trickled) -> None:
    assert result.elapsed_s < CUT_OFF_WITHIN_S, f"held {result.elapsed_s:.1f} s"
    assert result.answer.startswith(b"HTTP/1.1 408 "), result.answer[:200]
    assert b'"code":"request_timeout"' in result.answer.replace(b" ", b"")


@EMBEDDED
def test_headers_sent_one_byte_a_second_are_cut_off(served):
    headers = b"GET /images/alice HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    result = trickle(served, b"", headers)
    _cut_off(result)
    assert result.sent < len(headers)


@EMBEDDED
def test_a_connection_that_sends_nothing_is_closed(served):
    _cut_off(trickle(served, b"", b""))


@EMBEDDED
def test_a_body_sent_one_byte_a_second_is_cut_off_and_nothing_is_stored(served, live_api):
    boundary = "graywave-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + PHOTO
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /images/alice?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {live_api.tokens['alice']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    result = trickle(served, head + body[:100], body[100:])
    _cut_off(result)
    alice = live_api.client("alice")
    assert alice.get("/images/alice").json()["total"] == 0
    assert not [path for path in Path(live_api.settings.blob_url).rglob("*") if path.is_file()]  # no upload kept


@EMBEDDED
def test_an_unread_body_after_an_early_refusal_is_not_read_forever(served):
    """No token: 401 from the headers alone; the body that keeps trickling after it is cut off."""
    head = b"POST /images/alice HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    result = trickle(served, head, b"x" * 1000)
    assert result.answer.startswith(b"HTTP/1.1 401 "), result.answer[:200]
    assert result.elapsed_s < CUT_OFF_WITHIN_S, f"held {result.elapsed_s:.1f} s"


@EMBEDDED
def test_quick_clients_are_served_as_before_on_kept_alive_connections(served, live_api):
    headers = {"Authorization": f"Bearer {live_api.tokens['alice']}"}
    with httpx.Client(base_url=served.url, headers=headers, timeout=60) as alice:
        assert upload(alice, "alice", wait=True).status_code == 200
        time.sleep(HEADER_TIMEOUT_S + 0.5)  # idle on a kept-alive connection: not a slow request
        assert alice.get("/images/alice").json()["total"] == 1
        assert upload(alice, "alice", name="IMG_0002.jpg").status_code == 202
