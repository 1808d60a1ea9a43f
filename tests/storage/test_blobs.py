import os
from datetime import UTC, datetime

import pytest

from graywave.errors import BlobExists, BlobNotFound, Rejected, RejectReason
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


# --- hostile entries in a local upload folder (issue 11, item 7) -------------------------------------

DAY_PREFIX = "uploads/2026-11-25/"


def hostile_folder(tmp_path):
    """A blob folder whose uploads include every kind of entry that is not a plain file."""
    root, outside = tmp_path / "blobs", tmp_path / "outside"
    user = root / "uploads/2026-11-25/mallory"
    user.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"not yours")
    (user / "good.jpg").write_bytes(b"fine")
    (user / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (user / "escape.jpg").symlink_to(outside / "secret.jpg")
    (user / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(user / "pipe.jpg")
    (root / "uploads/2026-11-25/linked").symlink_to(outside, target_is_directory=True)
    with open(os.fsencode(user) + b"/caf\xe9.jpg", "wb") as file:  # a Latin-1 name
        file.write(b"bytes")
    return LocalBlobStore(root)


def test_listing_marks_links_fifos_and_undecodable_names_and_never_follows_them(tmp_path):
    store = hostile_folder(tmp_path)
    listed = {blob.key.removeprefix(DAY_PREFIX): blob.unusable for blob in store.list(DAY_PREFIX)}
    assert listed == {
        "mallory/good.jpg": None,
        "mallory/broken.jpg": (RejectReason.NOT_A_FILE, listed["mallory/broken.jpg"][1]),
        "mallory/escape.jpg": (RejectReason.NOT_A_FILE, listed["mallory/escape.jpg"][1]),
        "mallory/zero.jpg": (RejectReason.NOT_A_FILE, listed["mallory/zero.jpg"][1]),
        "mallory/pipe.jpg": (RejectReason.NOT_A_FILE, listed["mallory/pipe.jpg"][1]),
        "mallory/caf\\xe9.jpg": (RejectReason.BAD_KEY, "the file name is not UTF-8"),
    }  # nothing under the linked folder: links to folders are not walked
    assert "a symbolic link" in listed["mallory/escape.jpg"][1] and "a FIFO" in listed["mallory/pipe.jpg"][1]
    for blob in store.list(DAY_PREFIX):
        blob.key.encode()  # every key is valid UTF-8, fit for Parquet and JSON


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("mallory/broken.jpg", "cannot be opened"),
        ("mallory/escape.jpg", "cannot be opened"),
        ("mallory/zero.jpg", "cannot be opened"),
        ("mallory/pipe.jpg", "a FIFO, not a regular file"),
        ("linked/secret.jpg", "through a link out of the blob store"),
    ],
)
def test_reads_refuse_what_is_not_a_file_in_the_store_and_never_block(tmp_path, key, what):
    store = hostile_folder(tmp_path)
    with pytest.raises(Rejected, match=what) as refused:
        store.read(DAY_PREFIX + key)
    assert refused.value.reason == RejectReason.NOT_A_FILE


def test_reads_are_capped(tmp_path):
    store = LocalBlobStore(tmp_path)
    store.write("a/big.jpg", b"x" * 1000, "image/jpeg")
    assert store.read("a/big.jpg", max_bytes=1000) == b"x" * 1000
    with pytest.raises(Rejected) as refused:
        store.read("a/big.jpg", max_bytes=999)
    assert refused.value.reason == RejectReason.TOO_LARGE


def test_a_listing_skips_a_blob_deleted_while_it_runs(tmp_path):
    store = LocalBlobStore(tmp_path)
    for name in ("a", "b", "c"):
        store.write(f"u/{name}.jpg", b"1", "image/jpeg")
    listing = store.list("u/")
    first = next(listing)
    store.delete("u/b.jpg")  # after the folder was read, before b's entry is looked at
    assert [first.key, *(blob.key for blob in listing)] == ["u/a.jpg", "u/c.jpg"]


def test_any_upload_name_is_listed_and_no_half_written_file_is(tmp_path):
    store = LocalBlobStore(tmp_path)
    store.write("uploads/2026-11-25/u/.graywave-tmp-1.jpg", b"a photo", "image/jpeg")  # once skipped as a temp file
    (tmp_path / ".graywave-tmp").mkdir(exist_ok=True)
    (tmp_path / ".graywave-tmp" / "in-flight").write_bytes(b"half")  # a write under way
    assert [blob.key for blob in store.list("")] == ["uploads/2026-11-25/u/.graywave-tmp-1.jpg"]


def test_a_failed_write_leaves_no_staged_file(tmp_path):
    store = LocalBlobStore(tmp_path)
    (tmp_path / "a" / "b.jpg").mkdir(parents=True)  # a folder where the file should go
    with pytest.raises(OSError):
        store.write("a/b.jpg", b"bytes", "image/jpeg")
    assert list((tmp_path / ".graywave-tmp").iterdir()) == []


def test_a_name_that_is_not_utf8_is_reached_by_the_key_it_is_listed_under(tmp_path):
    """Its printable key used to name no file: deleting it through the API left it on disk."""
    store = hostile_folder(tmp_path)
    key = DAY_PREFIX + "mallory/caf\\xe9.jpg"
    assert [blob.key for blob in store.list(key)] == [key]
    assert store.read(key) == b"bytes"
    store.delete(key)
    assert os.fsencode(tmp_path / "blobs" / DAY_PREFIX / "mallory") + b"/caf\xe9.jpg" not in [
        os.path.join(os.fsencode(tmp_path / "blobs" / DAY_PREFIX / "mallory"), name)
        for name in os.listdir(os.fsencode(tmp_path / "blobs" / DAY_PREFIX / "mallory"))
    ]
    assert not list(store.list(key))


def test_a_literal_backslash_name_is_its_own_file(tmp_path):
    """A UTF-8 name that happens to read like an escape is the file of that name, not another one:
    writing it leaves the Latin-1 file as it was."""
    store = hostile_folder(tmp_path)
    store.write(DAY_PREFIX + "mallory/caf\\xe9.jpg", b"literal", "image/jpeg")
    folder = os.fsencode(tmp_path / "blobs" / DAY_PREFIX / "mallory")
    with open(folder + b"/caf\xe9.jpg", "rb") as latin1:
        assert latin1.read() == b"bytes"
    with open(folder + b"/caf\\xe9.jpg", "rb") as literal:
        assert literal.read() == b"literal"
    assert store.read(DAY_PREFIX + "mallory/caf\\xe9.jpg") == b"literal"


def test_a_write_that_must_not_overwrite_refuses_a_taken_key_and_leaves_it_as_it_was(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    store.write("uploads/2026-11-25/ann/a.jpg", b"first", "image/jpeg", overwrite=False)
    with pytest.raises(BlobExists):
        store.write("uploads/2026-11-25/ann/a.jpg", b"second", "image/jpeg", overwrite=False)
    assert store.read("uploads/2026-11-25/ann/a.jpg") == b"first"
    assert not list((tmp_path / "blobs" / ".graywave-tmp").iterdir())  # no staged file left behind
