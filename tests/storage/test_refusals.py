"""A write the storage refuses (a read-only file system, no permission, a full disk) is an operator's
to mend, not a bug: ``refusal`` recognises it in Python's and delta-rs's errors, and the local blob
store raises ``BackendUnavailable`` for it (the API answers 503, a wave stops with one line)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError

from graywave.errors import BackendUnavailable
from graywave.storage.blobs import LocalBlobStore, refusal


def _caused(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.EROFS, "Read-only file system"), "a read-only file system"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "over the disk quota"),
        # delta-rs, on a lake folder mounted read-only: a MERGE, and a DELETE (an OSError without errno)
        (DeltaError("Failed to parse parquet: External: Generic LocalFileSystem error: x (os error 30)"), None),
        (OSError("Generic LocalFileSystem error\n ↳ Unable to open file x\n ↳ Permission denied (os error 13)"), None),
        (_caused(RuntimeError("the wave failed"), OSError(errno.EROFS, "ro")), "a read-only file system"),
        (ValueError("not storage"), "-"),
        (FileNotFoundError(errno.ENOENT, "No such file"), "-"),
        (OSError("Generic LocalFileSystem error: No such file or directory (os error 2)"), "-"),
        (SchemaMismatchError("Schema error: column x is missing"), "-"),
        (CommitFailedError("Transaction failed: version already exists"), "-"),
        (ValueError("Read-only file system (os error 30)"), "-"),  # only OSError and delta-rs's errors
    ],
)
def test_refusal_recognises_refused_writes_and_nothing_else(error, reason):
    if reason is None:  # named by its Rust text
        assert refusal(error) in ("a read-only file system", "permission denied")
    elif reason == "-":
        assert refusal(error) is None
    else:
        assert refusal(error) == reason


@pytest.mark.parametrize("number", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_the_local_blob_stores_refused_writes_and_deletes_are_backend_unavailable(tmp_path, monkeypatch, number):
    """Tests run as root, whom a chmod does not stop: the folder's own ``OSError`` is raised at the
    lowest level (``tests/cli/test_inputs.py`` mounts a folder read-only where it may)."""
    store = LocalBlobStore(tmp_path)
    store.write("uploads/x.jpg", b"x", "image/jpeg")

    def refused(*args, **kwargs):
        raise OSError(number, "refused")

    monkeypatch.setattr(Path, "write_bytes", refused)
    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.raises(BackendUnavailable, match=r"could not write uploads/y\.jpg"):
        store.write("uploads/y.jpg", b"y", "image/jpeg")
    with pytest.raises(BackendUnavailable, match=r"could not delete uploads/x\.jpg"):
        store.delete("uploads/x.jpg")
    monkeypatch.undo()
    assert store.read("uploads/x.jpg") == b"x" and not store.exists("uploads/y.jpg")


def test_other_errors_of_the_blob_store_are_left_as_they_are(tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path)

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError, match="Input/output error"):
        store.write("uploads/y.jpg", b"y", "image/jpeg")
