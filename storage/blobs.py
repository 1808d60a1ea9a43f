"""Blob stores: where uploads arrive, processed images are written, and the Parquet lake lives.

Every store has the same small interface (``BlobStore``); ``open_blob_store`` picks one from a URL:
a local folder (the embedded default) or ``s3://bucket/prefix`` (see ``storage.s3``).
Keys are ``/``-separated and relative to the store's root.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Protocol

import pyarrow.fs as pafs

from graywave.errors import BackendUnavailable, BlobExists, BlobNotFound, InvalidInput, Rejected, RejectReason


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime
    """When the object was stored (UTC)."""
    unusable: tuple[RejectReason, str] | None = None
    """Why the object can never be read as an upload (a link, a FIFO, a name that is not UTF-8), if so."""


def too_large(key: str, max_bytes: int) -> Rejected:
    return Rejected(RejectReason.TOO_LARGE, f"{key} has more than {max_bytes} bytes (GRAYWAVE_MAX_UPLOAD_BYTES)")


REFUSED_WRITES = {
    errno.EROFS: "a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "over the disk quota",
}
"""What the storage's refusal of a write means: none of them is a bug, each an operator's to mend."""
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def refusal(error: BaseException) -> str | None:
    """Why the storage refused a write, when ``error`` or what caused it says that it did (a
    read-only file system, no permission, a full disk or quota); None for anything else.

    Python's ``OSError`` carries the errno. delta-rs raises an ``OSError`` without one, or a
    ``DeltaError``, whose text ends in Rust's ``Read-only file system (os error 30)``.

    >>> refusal(OSError(errno.EROFS, "Read-only file system"))
    'a read-only file system'
    >>> refusal(OSError("Generic LocalFileSystem error: Unable to open file x: Permission denied (os error 13)"))
    'permission denied'
    >>> refusal(FileNotFoundError(errno.ENOENT, "No such file")) is None
    True
    """
    from deltalake.exceptions import DeltaError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in REFUSED_WRITES:
            return REFUSED_WRITES[current.errno]
        if isinstance(current, OSError | DeltaError):
            for number in _RUST_OS_ERROR.findall(str(current)):
                if int(number) in REFUSED_WRITES:
                    return REFUSED_WRITES[int(number)]
        current = current.__cause__ or current.__context__
    return None


class BlobStore(Protocol):
    url: str
    remote: bool
    """True when each call crosses a network: callers then overlap calls with their own work."""

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ``Rejected`` (``too_large``) past ``max_bytes``, without reading them all,
        and (``not_a_file``) for what is not a regular object."""
        ...

    def write(self, key: str, data: bytes, content_type: str, *, overwrite: bool = True) -> None:
        """Store ``data`` at ``key`` atomically: readers see the old object or the whole new one.
        ``overwrite=False``: only if ``key`` holds nothing yet, else ``BlobExists`` (atomically too:
        of two writers of one new key, one wins)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens if it does not exist."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object now."""
        ...

    def url_for(self, key: str) -> str:
        """Where the object lives, as a URL (``file://...`` or ``s3://...``)."""
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

    def table_location(self, key: str) -> tuple[str, dict[str, str]]:
        """Where a Delta table at ``key`` lives, as delta-rs takes it: its URI and storage options."""
        ...


_TEMP_FOLDER = ".graywave-tmp"
"""Where a write stages its bytes before it renames them into place: a folder of the store's root,
outside every key prefix, so that no listing sees a half-written file and every upload is listed,
whatever its name."""


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
        try:
            key.encode()
        except UnicodeEncodeError:  # a lone surrogate: no file name is that
            raise InvalidInput(f"invalid blob key {key!r}: not UTF-8") from None
        return self.root.joinpath(*parts)

    def _existing(self, key: str) -> Path:
        """The path of ``key`` to read or delete: for the printable key of a name that is not UTF-8
        (``caf\\xe9.jpg``, as ``list`` gives it), that name. Writes never take this turn: they
        write the key's own name, never another file."""
        path = self._path(key)
        if "\\x" in key and not os.path.lexists(path):
            raw = self.root.joinpath(*(_from_printable(part) for part in key.split("/")))
            if os.path.lexists(raw):
                return raw
        return path

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for directory, subdirs, files in os.walk(base):  # symbolic links to folders are not followed
            subdirs[:] = sorted(d for d in subdirs if not (d == _TEMP_FOLDER and Path(directory) == self.root))
            for name in sorted(files):
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if not _printable(key).startswith(prefix):
                    continue
                try:
                    info = path.lstat()  # the entry itself, never what a link points to
                except FileNotFoundError:  # deleted since the folder was read
                    continue
                yield _blob_info(key, info)

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._existing(key)
        try:
            if not path.parent.resolve().is_relative_to(self.root):
                raise Rejected(RejectReason.NOT_A_FILE, f"{key} is reached through a link out of the blob store")
            # O_NOFOLLOW: a link is refused; O_NONBLOCK: opening a FIFO does not wait for a writer.
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as error:  # ELOOP: a symbolic link; EISDIR: a folder; ENXIO: a socket
            raise Rejected(RejectReason.NOT_A_FILE, f"{key} cannot be opened as a file ({error.strerror})") from None
        with os.fdopen(descriptor, "rb") as file:
            mode = os.fstat(descriptor).st_mode
            if not stat.S_ISREG(mode):
                raise Rejected(RejectReason.NOT_A_FILE, f"{key} is {_kind(mode)}, not a regular file")
            data = file.read() if max_bytes is None else file.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise too_large(key, max_bytes)
        return data

    def check(self) -> None:
        if not self.root.is_dir():
            raise BackendUnavailable(f"the blob store {self.url} is not a folder on this machine")

    def write(self, key: str, data: bytes, content_type: str, *, overwrite: bool = True) -> None:
        path = self._path(key)
        with self._refused(f"write {key}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.root / _TEMP_FOLDER
            staging.mkdir(exist_ok=True)
            temp = staging / uuid.uuid4().hex
            try:
                temp.write_bytes(data)
                if overwrite:
                    os.replace(temp, path)
                else:
                    os.link(temp, path)  # fails if the name exists: create-if-absent, atomically
            except FileExistsError:
                raise BlobExists(key) from None
            except BaseException:  # a full disk, a folder in the way: no half-written file stays behind
                temp.unlink(missing_ok=True)
                raise
            finally:
                if not overwrite:
                    temp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        with self._refused(f"delete {key}"):
            self._existing(key).unlink(missing_ok=True)

    @contextmanager
    def _refused(self, what: str) -> Iterator[None]:
        """A write the folder refuses (read-only, no permission, full) as ``BackendUnavailable``: the
        store is there but cannot be written now, as an S3 store that refuses is."""
        try:
            yield
        except OSError as error:
            reason = refusal(error)
            if reason is None:
                raise
            raise BackendUnavailable(f"the blob store {self.url} could not {what}: {reason} ({error})") from error

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._existing(key))

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), self.root.as_posix()

    def table_location(self, key: str) -> tuple[str, dict[str, str]]:
        return (self.root / key).as_posix() if key else self.root.as_posix(), {}


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISLNK: "a symbolic link",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISDIR: "a folder",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _printable(name: str) -> str:
    """A local name as a key: itself, or for bytes that are not UTF-8 (which ``os.fsdecode`` carries as
    surrogates) each such byte as ``\\xNN`` (``caf\\xe9.jpg``); ``_from_printable`` undoes it."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name).decode(errors="backslashreplace")
    return name


def _from_printable(part: str) -> str:
    """The local name that ``_printable`` showed as ``part``."""
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda escaped: bytes([int(escaped[1], 16)]), part.encode())
    return os.fsdecode(raw)


def _blob_info(key: str, info: os.stat_result) -> BlobInfo:
    """A listed entry of a local folder, with why it can never be an upload when it cannot."""
    modified = datetime.fromtimestamp(info.st_mtime, UTC)
    shown = _printable(key)
    if shown != key:  # bytes that are not UTF-8
        return BlobInfo(shown, info.st_size, modified, (RejectReason.BAD_KEY, "the file name is not UTF-8"))
    if not stat.S_ISREG(info.st_mode):
        detail = f"{_kind(info.st_mode)}, not a regular file: the blob store reads regular files only"
        return BlobInfo(key, info.st_size, modified, (RejectReason.NOT_A_FILE, detail))
    return BlobInfo(key, info.st_size, modified)


@cache
def open_blob_store(
    url: str, s3_endpoint_url: str | None = None, *, retry_s: float | None = None, s3_region: str | None = None
) -> BlobStore:
    """The blob store for ``url``: ``s3://bucket/prefix``, or a local folder (path or ``file://`` URL).
    ``retry_s``: how long an S3 store waits for a store that is unreachable or answers 5xx
    (``GRAYWAVE_BACKEND_RETRY_S``; None: ``s3.DEFAULT_RETRY_S``); ``s3_region``: the region its
    SigV4 signatures name (``GRAYWAVE_S3_REGION``; None: the AWS chain's, else ``us-east-1``).

    Stores are cached per process: an S3 store's client (and its connection pool) is shared.
    """
    if url.startswith("s3://"):
        from graywave.storage.s3 import DEFAULT_RETRY_S, S3BlobStore

        return S3BlobStore(
            url,
            endpoint_url=s3_endpoint_url,
            retry_s=DEFAULT_RETRY_S if retry_s is None else retry_s,
            region=s3_region,
        )
    if url.startswith("file://"):
        return LocalBlobStore(url.removeprefix("file://"))
    if "://" in url:
        raise InvalidInput(f"unsupported blob store URL {url!r}: use s3://bucket/prefix or a local folder")
    return LocalBlobStore(url)
