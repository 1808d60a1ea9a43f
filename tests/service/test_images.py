"""What the API changes (``service.images``): uploads processed at once, and reprocessing (what it
keeps, what it reports, what it cleans up)."""

from __future__ import annotations

import threading
import time

import pytest

from graywave.service import images
from graywave.service.backends import Backends
from graywave.service.images import ImageCatalog, delete_images, reprocess, upload_now
from graywave.service.samples import encode, synthetic_photo
from graywave.service.wave import run_wave
from tests.helpers import DAY, lake_of, put_uploads


def test_an_image_whose_original_became_unreadable_is_rejected_and_loses_its_old_processed_image(settings):
    keys = put_uploads(
        settings.blob_url,
        DAY,
        {f"alice/{k}.jpg": encode(synthetic_photo(64, 48, seed=k), "JPEG", quality=90) for k in range(3)},
    )
    run_wave(settings, DAY, "morning", log=lambda _: None)
    with Backends.open(settings) as backends:
        before = {e.source_key: e for e in ImageCatalog(backends).entries(DAY, "alice")}
        processed_key = before[keys[0]].record.processed_key  # type: ignore[union-attr]
        assert backends.blobs.read(processed_key)
        backends.blobs.write(keys[0], b"no longer a photo", "image/jpeg")
        report = reprocess(backends, settings, before.values())
        assert (report.count, report.processed, report.rejected, report.failed) == (3, 2, 1, ())
        after = {e.source_key: e for e in ImageCatalog(backends).entries(DAY, "alice")}
        assert after[keys[0]].status == "rejected"
        assert not list(backends.blobs.list(processed_key))  # no processed image is left behind for a reject
        assert all(backends.blobs.read(after[k].record.processed_key) for k in keys[1:])  # type: ignore[union-attr]


def test_reprocessing_goes_batch_by_batch_and_reports_progress(settings, monkeypatch):
    monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "2")
    settings = type(settings)()
    put_uploads(
        settings.blob_url,
        DAY,
        {f"bob/{k}.jpg": encode(synthetic_photo(32, 32, seed=k), "JPEG", quality=90) for k in range(5)},
    )
    run_wave(settings, DAY, "morning", log=lambda _: None)
    seen = []
    with Backends.open(settings) as backends:
        report = reprocess(backends, settings, ImageCatalog(backends).entries(DAY, "bob"), progress=seen.append)
    assert [r.processed for r in seen] == [2, 4, 5] and report == seen[-1]


def test_an_upload_processed_at_once_rewrites_no_lake_file(settings, monkeypatch):
    """Its rows are appended; the rows of other uploads are not searched (that grew with the lake:
    ``bench/api_processing_bench.py``) nor rewritten."""
    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    with Backends.open(settings) as backends:
        for _ in range(3):
            upload_now(backends, settings, "alice", photo, "image/jpeg")
        monkeypatch.setattr(type(backends.lake), "remove_rows", lambda *a, **k: pytest.fail("searched the lake"))
        _, processed = upload_now(backends, settings, "alice", photo, "image/jpeg")
        assert processed
        assert len(ImageCatalog(backends).entries(DAY, "alice")) == 4


def test_an_upload_that_a_wave_recorded_meanwhile_is_not_recorded_twice(settings, monkeypatch):
    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    real_store = images.store_upload

    def store_then_a_wave_runs(*args, **kwargs):  # the wave lists and records it before upload_now holds the lake
        key = real_store(*args, **kwargs)
        run_wave(settings, settings.today(), "morning", log=lambda _: None)
        return key

    monkeypatch.setattr(images, "store_upload", store_then_a_wave_runs)
    with Backends.open(settings) as backends:
        key, processed = upload_now(backends, settings, "alice", photo, "image/jpeg")
        assert processed
        [entry] = ImageCatalog(backends).entries(settings.today(), "alice")
        assert (entry.source_key, entry.wave) == (key, "morning")


def test_deleting_an_upload_that_a_wave_processed_since_it_was_read_leaves_no_processed_image(settings):
    """The chaos test found it: a delete read the upload as pending, waited for the wave that held
    the lake, then removed its rows but not the processed image the wave had written."""
    put_uploads(settings.blob_url, DAY, {"alice/a.jpg": encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)})
    with Backends.open(settings) as backends:
        [pending] = ImageCatalog(backends).entries(DAY, "alice")
        assert pending.status == "pending"
        run_wave(settings, DAY, "morning", log=lambda _: None)  # while the delete request waits
        delete_images(backends, settings, [pending])
        assert not list(backends.blobs.list("processed/"))
        assert not ImageCatalog(backends).entries(DAY, "alice")


def test_a_long_reprocessing_lets_a_waiting_writer_have_the_lake_between_batches(settings, monkeypatch):
    """The review found it: batches took the lake again at once, and a scheduled wave that waited for
    it (randomised retries up to half a second apart) failed with "another wave" behind a long job."""
    monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "2")
    settings = type(settings)()
    photos = {f"bob/{k}.jpg": encode(synthetic_photo(32, 32, seed=k), "JPEG", quality=90) for k in range(6)}
    put_uploads(settings.blob_url, DAY, photos)
    run_wave(settings, DAY, "morning", log=lambda _: None)
    batches_done: list[int] = []
    got_it: list[int] = []
    processing = threading.Event()
    real_process = images.process_uploads

    def slow_batch(*args, **kwargs):  # each batch holds the lake a while, as real photos do
        processing.set()
        time.sleep(0.3)
        return real_process(*args, **kwargs)

    monkeypatch.setattr(images, "process_uploads", slow_batch)

    def writer() -> None:
        processing.wait(10)  # the job holds the lake: this writer waits, retrying, as a wave would
        with lake_of(settings).exclusive(wait_s=10, holder="a waiting wave"):
            got_it.append(len(batches_done))

    waiting = threading.Thread(target=writer)
    waiting.start()
    with Backends.open(settings) as backends:
        entries = ImageCatalog(backends).entries(DAY, "bob")
        reprocess(backends, settings, entries, progress=lambda r: batches_done.append(r.processed))
    waiting.join(15)
    assert got_it and got_it[0] < 3  # the lake was had before the job's last batch, not after


def test_a_name_whose_record_outlived_its_original_is_not_taken_again(settings):
    """The review found it: a delete that failed between the original and the rows left the rows;
    the same name uploaded again got the same key and id, and was taken as handled: never processed."""
    from graywave.service.images import store_upload

    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    with Backends.open(settings) as backends:
        first, _ = upload_now(backends, settings, "alice", photo, "image/jpeg", "IMG_0001.jpg")
        backends.blobs.delete(first)  # the original is gone, its rows are not
        again = store_upload(backends, settings, "alice", photo, "image/jpeg", "IMG_0001.jpg")
    assert first.endswith("/IMG_0001.jpg") and again.endswith("/IMG_0001 (2).jpg")
