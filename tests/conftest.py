"""Test set-up: Prefect's state in a temporary folder, no telemetry, and helpers to make uploads."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="graywave-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
# The local S3 server accepts any credentials; these keep boto3 away from real ones.
os.environ.update(
    AWS_ACCESS_KEY_ID="graywave-test", AWS_SECRET_ACCESS_KEY="graywave-test", AWS_DEFAULT_REGION="us-east-1"
)
for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_key, None)

from graywave.config import Settings, prepare_prefect_environment  # noqa: E402

prepare_prefect_environment(Settings())

# The GPU kernels under numba-cuda's simulator need a process of their own (NUMBA_ENABLE_CUDASIM=1
# replaces numba.cuda for the whole process): ``make test`` runs that folder after this run.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["kernels/gpu_sim"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty embedded deployment (blob folder and lake) that ``Settings()`` points at."""
    (tmp_path / "blobs").mkdir()  # the upload folder exists (a wave fails on one that does not)
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(tmp_path / "blobs"))
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("GRAYWAVE_WORKERS", "2")
    monkeypatch.setenv("GRAYWAVE_DEVICE", "cpu")
    yield tmp_path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings()


@pytest.fixture(scope="session", autouse=True)
def _quiet_prefect_shutdown() -> Iterator[None]:
    """Prefect's temporary server logs as it stops at exit, after pytest has closed the streams."""
    yield
    logging.raiseExceptions = False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalS3:
    """moto's S3 server on 127.0.0.1 (a real HTTP endpoint), which can be stopped and restarted."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def new_bucket(self) -> str:
        import boto3

        name = f"graywave-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    server = LocalS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``GRAYWAVE_TEST_MONGODB_URI`` (a real MongoDB), or a SecantusDB server started on 127.0.0.1."""
    configured = os.environ.get("GRAYWAVE_TEST_MONGODB_URI")
    if configured:
        yield configured
        return
    import pymongo

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("secantusd-py")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
            "--storage-path",
            str(tmp_path_factory.mktemp("secantus")),
            "--enable-test-commands",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.monotonic() + 60
    while True:
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            break
        except pymongo.errors.PyMongoError:
            assert server.poll() is None and time.monotonic() < deadline, "SecantusDB did not start"
            time.sleep(0.2)
    yield uri
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def s3_settings(local_s3: LocalS3, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The production architecture: blobs and lake in a new S3 bucket, images in a new MongoDB database."""
    bucket = local_s3.new_bucket()
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", f"s3://{bucket}/blobs")
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", f"s3://{bucket}/lake")
    monkeypatch.setenv("GRAYWAVE_S3_ENDPOINT_URL", local_s3.endpoint)
    monkeypatch.setenv("GRAYWAVE_MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("GRAYWAVE_MONGODB_DATABASE", f"graywave_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("GRAYWAVE_WORKERS", "2")
    monkeypatch.setenv("GRAYWAVE_DEVICE", "cpu")
    monkeypatch.setenv("GRAYWAVE_LOCK_TTL_S", "3")
    return Settings()


@pytest.fixture
def prefect_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Prefect server of its own (a copy of the session's Prefect home, so its database is migrated)."""
    home = tmp_path / "prefect"
    shutil.copytree(os.environ["PREFECT_HOME"], home, dirs_exist_ok=True)
    monkeypatch.setenv("PREFECT_HOME", str(home))  # the server's subprocess, and graywave's, use it
    from prefect.server.api.server import SubprocessASGIServer  # Prefect's whole server: seconds to import

    server = SubprocessASGIServer(port=free_port())
    server.start()
    yield server.api_url
    server.stop()


@pytest.fixture(scope="session")
def phone_files() -> dict[str, bytes]:
    """One upload per kind that the wave must handle, keyed by ``user/file name``; names may lie."""
    from graywave.service.samples import encode, synthetic_photo
    from tests.helpers import png_header, rotated_jpeg

    rgb = synthetic_photo(400, 300, seed=3)
    jpeg = encode(rgb, "JPEG", quality=90)
    return {
        "ann/plain.jpg": jpeg,
        "ann/progressive.jpg": encode(rgb, "JPEG", quality=90, progressive=True),
        "bob/rotated.jpg": rotated_jpeg(rgb),
        "bob/photo.heic": encode(rgb, "HEIF", quality=80),
        "cat/screenshot.png": encode(rgb, "PNG"),
        "cat/sticker.webp": encode(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "WEBP"),
        "dan/actually-a-png.jpg": encode(rgb, "PNG"),
        "dan/half.jpg": jpeg[: len(jpeg) // 2],
        "eve/readme.jpg": b"not an image at all",
        "eve/empty.jpg": b"",
        "eve/anim.gif": encode(rgb, "GIF"),
        "eve/huge.png": png_header(16000, 16000, "RGBA"),  # within the pixel limit, over the memory budget
    }
