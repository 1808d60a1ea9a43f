from datetime import UTC, datetime

import pytest

from graywave.errors import BlobNotFound
from graywave.storage.blobs import LocalBlobStore, open_blob_store


def test_write_read_list(tmp_path):
    store = open_blob_store(str(tmp_path))
    assert isinstance(store, LocalBlobStore)
    store.write("uploads/2026-11-25/u/a.jpg", b"one", "image/jpeg")
    store.write("uploads/2026-11-25/v/b.jpg", b"two!", "image/jpeg")
    store.write("uploads/2026-11-24/u/c.jpg", b"three", "image/jpeg")
    assert store.read("uploads/2026-11-25/v/b.jpg") == b"two!"
    listed = list(store.list("uploads/2026-11-25/"))
    assert sorted(b.key for b in listed) == ["uploads/2026-11-25/u/a.jpg", "uploads/2026-11-25/v/b.jpg"]
    assert {b.size for b in listed} == {3, 4}
    assert all(abs((b.modified - datetime.now(UTC)).total_seconds()) < 60 for b in listed)
    assert list(store.list("uploads/2026-01-01/")) == []


def test_overwrite_is_whole_and_leaves_no_temporary_files(tmp_path):
    store = LocalBlobStore(tmp_path)
    store.write("a/b.jpg", b"first", "image/jpeg")
    store.write("a/b.jpg", b"second", "image/jpeg")
    assert store.read("a/b.jpg") == b"second"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.jpg"]


def test_missing_and_invalid_keys(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        store.read("nope/x.jpg")
    for bad in ("../escape", "/abs", "a//b", "a/./b"):
        with pytest.raises(ValueError):
            store.write(bad, b"x", "image/jpeg")


def test_unknown_url_schemes_are_refused():
    with pytest.raises(ValueError, match="unsupported blob store URL"):
        open_blob_store("gs://bucket/prefix")
