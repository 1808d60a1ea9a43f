"""Blob stores: where uploads arrive, processed images are written, and the Parquet lake lives.

Every store has the same small interface (``BlobStore``); ``open_blob_store`` picks one from a URL:
a local folder (the embedded default) or ``s3://bucket/prefix`` (see ``storage.s3``).
Keys are ``/``-separated and relative to the store's root.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Protocol

import filelock
import pyarrow.fs as pafs

from graywave.errors import BackendUnavailable, BlobNotFound, Busy, InvalidInput


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime
    """When the object was stored (UTC)."""


class BlobStore(Protocol):
    url: str
    remote: bool
    """True when each call crosses a network: callers then overlap calls with their own work."""

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` at ``key`` atomically: readers see the old object or the whole new one."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens if it does not exist."""
        ...

    def url_for(self, key: str) -> str:
        """Where the object lives, as a URL (``file://...`` or ``s3://...``)."""
        ...

    def exclusive(self, key: str, ttl_s: float) -> AbstractContextManager[None]:
        """Hold a lock named ``key`` for one process at a time; raise ``Busy`` at once if held.

        A holder that dies without releasing it (kill -9) loses it within ``ttl_s`` at most.
        """
        ...

    def check(self) -> None:
        """Raise ``BackendUnavailable`` naming the store when this machine cannot reach it at all
        (a folder that is not mounted here, a bucket these credentials cannot read): a worker that
        cannot see the store must fail its batch, not reject its uploads as vanished."""
        ...

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The same objects as a pyarrow filesystem and the path of the store's root in it, for
        readers that scan many files at once (``pyarrow.dataset``)."""
        ...


_TEMP_PREFIX = ".graywave-tmp-"


class LocalBlobStore:
    """A folder on local disk (the embedded default)."""

    remote = False

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise InvalidInput(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for directory, subdirs, files in os.walk(base):
            subdirs.sort()
            for name in sorted(files):
                if name.startswith(_TEMP_PREFIX):
                    continue
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    yield BlobInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(key) from None

    def check(self) -> None:
        if not self.root.is_dir():
            raise BackendUnavailable(f"the blob store {self.url} is not a folder on this machine")

    def write(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
        temp.write_bytes(data)
        os.replace(temp, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), self.root.as_posix()

    @contextmanager
    def exclusive(self, key: str, ttl_s: float) -> Iterator[None]:
        # An OS file lock: the kernel releases it when its holder dies, so ttl_s is not needed.
        path = self._path(f"{key}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise Busy(f"{path} is held by another process") from None
        try:
            yield
        finally:
            lock.release()


@cache
def open_blob_store(url: str, s3_endpoint_url: str | None = None) -> BlobStore:
    """The blob store for ``url``: ``s3://bucket/prefix``, or a local folder (path or ``file://`` URL).

    Stores are cached per process: an S3 store's client (and its connection pool) is shared.
    """
    if url.startswith("s3://"):
        from graywave.storage.s3 import S3BlobStore

        return S3BlobStore(url, endpoint_url=s3_endpoint_url)
    if url.startswith("file://"):
        return LocalBlobStore(url.removeprefix("file://"))
    if "://" in url:
        raise InvalidInput(f"unsupported blob store URL {url!r}: use s3://bucket/prefix or a local folder")
    return LocalBlobStore(url)
