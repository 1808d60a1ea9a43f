"""``Graywave(settings)``: the use cases of one deployment, built once from the settings, on one set
of backends; and the service's answer to "reprocess these images now or in a job?"."""

from __future__ import annotations

import pytest

from graywave.errors import BadKey
from graywave.service import Graywave
from graywave.service.images import ReprocessLater, ReprocessNow
from graywave.service.samples import encode, synthetic_photo
from graywave.service.terms import upload_key
from tests.helpers import DAY, put_uploads


def test_the_groups_share_one_set_of_backends_and_a_wave_leaves_them_open(settings):
    put_uploads(settings.blob_url, DAY, {"alice/a.jpg": encode(synthetic_photo(32, 32, seed=1), "JPEG")})
    with Graywave(settings) as graywave:
        assert graywave.images is graywave.images  # built once, on first use
        groups = (graywave.images, graywave.waves, graywave.daily, graywave.operations)
        assert all(group.backends is graywave.backends for group in groups)
        assert len(graywave.waves.plan(DAY).pending) == 1
        summary = graywave.waves.run(DAY, "morning", log=lambda _: None)
        assert summary.processed == 1 and not graywave.waves.plan(DAY)
        [entry] = graywave.images.entries(DAY, "alice")  # the same backends, still open
        assert entry.status == "processed" and graywave.readiness().ready
        assert graywave.daily.histograms(DAY).users == ["alice"]


def test_a_few_images_are_reprocessed_now_and_more_by_a_job(settings, monkeypatch):
    """The decision the API's PUT /images/{user} maps to 200 or 202: handled images only (a pending
    upload is left to the waves), up to GRAYWAVE_API_INLINE_REPROCESS_MAX of them now."""
    photos = {f"bob/{k}.jpg": encode(synthetic_photo(32, 32, seed=k), "JPEG") for k in range(3)}
    put_uploads(settings.blob_url, DAY, photos)
    monkeypatch.setattr(type(settings), "today", lambda self: DAY)
    with Graywave(settings) as graywave:
        graywave.waves.run(DAY, "morning", log=lambda _: None)
    put_uploads(settings.blob_url, DAY, {"bob/pending.jpg": encode(synthetic_photo(32, 32, seed=9), "JPEG")})

    monkeypatch.setenv("GRAYWAVE_API_INLINE_REPROCESS_MAX", "2")
    with Graywave(type(settings)()) as graywave:
        assert graywave.images.reprocessing("bob") == ReprocessLater("bob", 3)
        assert graywave.images.reprocessing(None) == ReprocessLater(None, 3)
    monkeypatch.setenv("GRAYWAVE_API_INLINE_REPROCESS_MAX", "3")
    with Graywave(type(settings)()) as graywave:
        now = graywave.images.reprocessing("bob")
        assert isinstance(now, ReprocessNow) and len(now.entries) == 3
        report = now.run()
        assert (report.count, report.processed, report.rejected, report.failed) == (3, 3, 0, ())


def test_an_upload_received_at_its_key_waits_for_its_wave_and_the_lake_contents_show_it(settings):
    """``Images.receive``: an upload as a phone's direct upload lands (the demo's samples); a key that
    is not an upload key is refused. ``Operations.lake_contents``: what the demo's report reads."""
    key = upload_key(DAY, "carol", "a.jpg")
    with Graywave(settings) as graywave:
        graywave.images.receive(key, encode(synthetic_photo(32, 32, seed=3), "JPEG"))
        with pytest.raises(BadKey):
            graywave.images.receive("processed/elsewhere.jpg", b"x")
        assert [upload.source_key for upload in graywave.waves.plan(DAY).pending] == [key]
        graywave.waves.run(DAY, "morning", log=lambda _: None)
        contents = graywave.operations.lake_contents(DAY)
    assert contents.images["source_key"].to_list() == [key]
    assert contents.rejects.height == 0 and contents.median is None and contents.similar == {}
    assert contents.images_versions >= 1 and contents.images_uri.startswith(contents.lake_url)
