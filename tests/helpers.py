from __future__ import annotations

import io
import socket
import subprocess
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from graywave.config import Settings
from graywave.service.samples import encode
from graywave.storage.blobs import BlobStore, LocalBlobStore, open_blob_store
from graywave.storage.lake import Lake
from graywave.storage.layout import upload_key

DAY = date(2026, 11, 25)

S3_ACCESS_KEY = S3_SECRET_KEY = "graywave-test"
"""The one identity that the tests' S3 server (SeaweedFS) accepts; ``tests/conftest.py`` also puts it in
``AWS_*``, which keeps boto3 away from real credentials."""


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
