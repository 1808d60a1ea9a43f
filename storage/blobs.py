"""Blob stores: where uploads arrive and processed images are written.

Every store has the same small interface (``BlobStore``); ``open_blob_store`` picks one from a URL.
Keys are ``/``-separated and relative to the store's root.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime
    """When the object was stored (UTC)."""


class BlobNotFound(KeyError):
    """The key does not exist (or no longer exists) in the store."""


class BlobStore(Protocol):
    url: str

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` at ``key`` atomically: readers see the old object or the whole new one."""
        ...


_TEMP_PREFIX = ".graywave-tmp-"


class LocalBlobStore:
    """A folder on local disk (the embedded default)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"invalid blob key {key!r}")
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

    def write(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
        temp.write_bytes(data)
        os.replace(temp, path)


def open_blob_store(url: str) -> BlobStore:
    """A blob store for ``url``: a local folder path (or ``file://`` URL)."""
    if url.startswith("file://"):
        return LocalBlobStore(url.removeprefix("file://"))
    if "://" in url:
        raise ValueError(f"unsupported blob store URL {url!r}: use a local folder")
    return LocalBlobStore(url)
