"""Helpers shared by the tests, each defined once: made-up photos, uploads and records, free ports, a clock,
an app in this process (``httpx.ASGITransport``) or under uvicorn. Fixtures are in ``conftest.py``; no test
imports a ``conftest`` module."""

from __future__ import annotations

import functools
import io
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from PIL import Image

from graywave.config import Settings
from graywave.records import ImageRecord, RejectRecord, image_id_for
from graywave.service.samples import encode, synthetic_photo
from graywave.storage.blobs import BlobStore, LocalBlobStore, open_blob_store
from graywave.storage.lake import CommitInfo, Lake
from graywave.storage.layout import upload_key

if TYPE_CHECKING:
    from fastapi import FastAPI

DAY = date(2026, 11, 25)
"""The tests' upload day: a Wednesday of ISO week 2026-W48."""
GRAYWAVE = str(Path(sys.executable).with_name("graywave"))
"""The graywave command of this environment, as the tests start it in a process of its own."""

S3_ACCESS_KEY = S3_SECRET_KEY = "graywave-test"
"""The one identity that the tests' S3 server (SeaweedFS) accepts; ``tests/conftest.py`` also puts it in
``AWS_*``, which keeps boto3 away from real credentials."""


SERVER_TIMEOUT_S = 120.0
"""How long a test waits for one answer from a real server that the tests started (SeaweedFS, uvicorn, a
Prefect server, Chromium's pages): never a library's default (httpx's 5 s, Playwright's 30 s), which a
loaded machine exceeded. A test that means a shorter wait says so with its own figure and reason."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


GRPC_PORT_OFFSET = 10000
"""SeaweedFS serves each component's gRPC on its HTTP port + 10000 (its admin worker assumes so)."""


def free_port_pair() -> int:
    """A free port ``p`` on 127.0.0.1 whose ``p + GRPC_PORT_OFFSET`` is free too."""
    while True:
        port = free_port()
        if port + GRPC_PORT_OFFSET <= 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + GRPC_PORT_OFFSET))
                except OSError:
                    continue
            return port


class Clock:
    """``time.monotonic`` as the test says it is: ``clock.now`` is what it answers."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample_photo(width: int = 320, height: int = 240, seed: int = 7) -> np.ndarray:
    """A synthetic RGB photo; without arguments, the tests' usual 320 x 240 one."""
    return synthetic_photo(width, height, seed=seed)


def sample_jpeg(seed: int, width: int = 64, height: int = 48) -> bytes:
    """A small synthetic photo as a JPEG: ``seed`` makes each one different."""
    return encode(sample_photo(width, height, seed), "JPEG")


@functools.cache
def phone_jpeg(seed: int) -> bytes:
    """A synthetic 1600 x 1200 photo as a JPEG (quality 90): a phone's size, whose processing takes
    long enough for a test to stop a wave in the middle. Made once per test process: each costs a
    quarter of a CPU-second, and the interrupted-wave tests need about 150."""
    return encode(synthetic_photo(1600, 1200, seed=seed), "JPEG", quality=90)


def rotated_jpeg(rgb: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(rgb, "JPEG", quality=90, exif=exif)


EXPECTED_REJECTS = {
    "dan/half.jpg": "truncated",
    "eve/readme.jpg": "not_an_image",
    "eve/empty.jpg": "empty",
    "eve/anim.gif": "unsupported_format",
    "eve/huge.png": "over_decode_budget",
}


def put_uploads(target: BlobStore | str | Path, day: date, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` (``user/file name`` -> bytes) as uploads of ``day``; a path means a local folder."""
    store = LocalBlobStore(target) if isinstance(target, str | Path) else target
    keys = []
    for path, data in files.items():
        user, name = path.split("/", 1)
        key = upload_key(day, user, name)
        store.write(key, data, "application/octet-stream")
        keys.append(key)
    return keys


def decode_processed(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def lake_of(settings: Settings) -> Lake:
    return Lake(open_blob_store(settings.lake_url, settings.s3_endpoint_url))


def blobs_of(settings: Settings) -> BlobStore:
    return open_blob_store(settings.blob_url, settings.s3_endpoint_url)


def png_header(width: int, height: int, mode: str) -> bytes:
    """The first bytes of a PNG of that size and mode (``L``, ``RGB``, ``RGBA``...): a valid header and
    nothing decodable after it. What a header check sees of a 16000x16000 image, in 60 bytes."""
    import struct
    import zlib

    color = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}[mode]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def wait_for(check, what: str, timeout_s: float, processes: list[subprocess.Popen]):
    """``check()``'s first truthy answer, polled every half second; fails once ``timeout_s`` have passed
    or one of ``processes`` has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        dead = [p.args for p in processes if p.poll() is not None]
        assert not dead and time.monotonic() < deadline, f"{what}: not in {timeout_s} s (exited: {dead})"
        time.sleep(0.5)


def image_record(
    key: str | None = None,
    user: str = "alice",
    histogram: Sequence[int] = (8,) + (0,) * 15,
    upload_date: date = DAY,
    name: str = "a.jpg",
    uploaded_at: datetime | None = None,
) -> ImageRecord:
    """An image of ``user`` uploaded on ``upload_date`` as ``name`` (or at ``key``)."""
    key = key or f"uploads/{upload_date}/{user}/{name}"
    at = uploaded_at or datetime.combine(upload_date, datetime.min.time(), UTC) + timedelta(hours=9)
    pixels = sum(histogram)
    return ImageRecord(
        image_id=image_id_for(key),
        user_id=user,
        upload_date=upload_date,
        file_name=key.rsplit("/", 1)[-1],
        source_key=key,
        processed_key=f"processed/{upload_date}/{user}/{image_id_for(key)}.jpg",
        uploaded_at=at,
        processed_at=at,
        width=pixels,
        height=1,
        format="JPEG",
        pixel_count=pixels,
        source_bytes=100,
        processed_bytes=50,
        histogram=tuple(histogram),
    )


def reject_record(key: str, user: str | None = None, reason: str = "corrupt") -> RejectRecord:
    return RejectRecord(
        source_key=key,
        user_id=user,
        reason=reason,
        detail="bad",
        uploaded_at=None,
        seen_at=datetime.now(UTC),
        source_bytes=3,
    )


def append_images(lake: Lake, day: date, wave: str, records: Sequence[ImageRecord]) -> int:
    """Record ``records`` in ``images`` as the wave ``wave`` of ``day`` would; the rows inserted."""
    info = CommitInfo("record", day, wave)
    return lake.record("images", ImageRecord.to_arrow(records), day=day, wave=wave, among=[day], info=info)


def append_rejects(lake: Lake, day: date, wave: str, records: Sequence[RejectRecord]) -> int:
    info = CommitInfo("record", day, wave)
    return lake.record("rejects", RejectRecord.to_arrow(records), day=day, wave=wave, among=[day], info=info)


@dataclass
class Api:
    """An API under a real server (the ``live_api`` fixture): its URL, settings and the tokens of alice,
    bob and admin."""

    url: str
    settings: Settings
    tokens: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


IN_PROCESS_URL = "http://graywave.test"
"""The base URL of an app in this process: requests to it go to the app through ``httpx.ASGITransport``,
requests to any other address (a presigned S3 URL the app redirects to) over the network."""


def in_process_client(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    """A client of ``app`` in this process (``IN_PROCESS_URL``), with ``token`` as its bearer token.

    Exceptions of the app are answered as a server answers them (its 500), not raised in the test."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(base_url=IN_PROCESS_URL, headers=headers, mounts={IN_PROCESS_URL: transport}, timeout=60)


def api_app(settings: Settings) -> FastAPI:
    """The app that ``graywave api`` serves (``cli.asgi``: with Prefect's runner of background jobs)."""
    from fastapi import FastAPI

    from graywave.cli.asgi import create_app

    app = create_app(settings)
    assert isinstance(app, FastAPI)
    return app


@asynccontextmanager
async def in_process(app: FastAPI) -> AsyncIterator[FastAPI]:
    """``app`` between its start-up and its shutdown, as uvicorn runs it: ``httpx.ASGITransport`` sends
    no lifespan events, so the app's lifespan (its warm-up, its backends closed) is entered here."""
    async with app.router.lifespan_context(app):
        yield app


@dataclass
class InProcessApi:
    """An API in this process (the ``api`` fixture), its lifespan running: its app, settings and
    the tokens of alice, bob and admin. Its clients are closed with it."""

    app: FastAPI
    settings: Settings
    tokens: dict[str, str]
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, who: str | None) -> httpx.AsyncClient:
        client = in_process_client(self.app, self.tokens[who] if who else None)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@contextmanager
def serving(app: FastAPI, root_path: str = "", http: str = "auto") -> Iterator[str]:
    """``app`` under a real uvicorn server on 127.0.0.1 (``root_path``: uvicorn's ``--root-path``,
    ``http``: its protocol class); its URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", root_path=root_path, http=http)
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


def command_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a graywave command with no Prefect server to use: no ``PREFECT_API_URL``, the
    Prefect home ``prefect_home`` of its own (a database with this command's runs only)."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return env | {"PREFECT_HOME": str(prefect_home)} | extra


def flow_run_states(prefect_home: Path) -> list[tuple[str, str]]:
    """Each flow run's (name, state type), in the order they started, from the Prefect database under
    ``prefect_home``."""
    with sqlite3.connect(f"file:{prefect_home / 'prefect.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT name, state_type FROM flow_run ORDER BY start_time").fetchall()
