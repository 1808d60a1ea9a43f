"""Reprocessing (``service.images.reprocess``): what it keeps, what it reports, what it cleans up."""

from __future__ import annotations

from graywave.service.backends import Backends
from graywave.service.images import ImageCatalog, reprocess
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
