"""What the API changes (``service.images``): uploads processed at once, and reprocessing (what it
keeps, what it reports, what it cleans up)."""

from __future__ import annotations

import pytest

from graywave.service import images
from graywave.service.backends import Backends
from graywave.service.images import ImageCatalog, delete_images, reprocess, upload_now
from graywave.service.samples import encode, synthetic_photo
from graywave.service.wave import run_wave
from tests.helpers import DAY, put_uploads


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
