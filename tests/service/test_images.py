"""What the API changes (``service.images.Images``): uploads processed at once, and reprocessing (what it
keeps, what it reports, what it cleans up)."""

from __future__ import annotations

import signal
import threading

import pytest

from graywave.errors import NotFound
from graywave.service import images
from graywave.service.backends import Backends
from graywave.service.images import Images
from graywave.service.samples import encode, synthetic_photo
from graywave.service.wave import run_wave
from graywave.storage.mongo import MongoCatalog
from tests.helpers import DAY, blobs_of, lake_of, put_uploads


def test_an_image_whose_original_became_unreadable_is_rejected_and_loses_its_old_processed_image(settings):
    keys = put_uploads(
        settings.blob_url,
        DAY,
        {f"alice/{k}.jpg": encode(synthetic_photo(64, 48, seed=k), "JPEG", quality=90) for k in range(3)},
    )
    run_wave(settings, DAY, "morning", log=lambda _: None)
    with Backends.open(settings) as backends:
        before = {e.source_key: e for e in Images(settings, backends).entries(DAY, "alice")}
        processed_key = before[keys[0]].record.processed_key  # type: ignore[union-attr]
        assert backends.blobs.read(processed_key)
        backends.blobs.write(keys[0], b"no longer a photo", "image/jpeg")
        report = Images(settings, backends).reprocess(before.values())
        assert (report.count, report.processed, report.rejected, report.failed) == (3, 2, 1, ())
        after = {e.source_key: e for e in Images(settings, backends).entries(DAY, "alice")}
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
        report = Images(settings, backends).reprocess(
            Images(settings, backends).entries(DAY, "bob"), progress=seen.append
        )
    assert [r.processed for r in seen] == [2, 4, 5] and report == seen[-1]


def test_an_upload_processed_at_once_rewrites_no_lake_file(settings, monkeypatch):
    """Its rows are inserted by a MERGE that adds a file and removes none; nothing is deleted."""
    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    with Backends.open(settings) as backends:
        for _ in range(3):
            Images(settings, backends).upload_now("alice", photo, "image/jpeg")
        monkeypatch.setattr(type(backends.lake), "delete", lambda *a, **k: pytest.fail("deleted from the lake"))
        assert Images(settings, backends).upload_now("alice", photo, "image/jpeg").processed
        assert len(Images(settings, backends).entries(DAY, "alice")) == 4
        latest = backends.lake.history("images", 1)[0]
        assert latest.operation == "MERGE" and latest.graywave["wave"] == "api"
        assert latest.metrics["num_target_files_removed"] == 0 and latest.metrics["num_target_rows_inserted"] == 1


def test_an_upload_that_a_wave_recorded_meanwhile_is_not_recorded_twice(settings, monkeypatch):
    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    real_store = images.Images.store_upload

    def store_then_a_wave_runs(*args, **kwargs):  # the wave lists and records it before upload_now holds the lake
        key = real_store(*args, **kwargs)
        run_wave(settings, settings.today(), "morning", log=lambda _: None)
        return key

    monkeypatch.setattr(images.Images, "store_upload", store_then_a_wave_runs)
    with Backends.open(settings) as backends:
        uploaded = Images(settings, backends).upload_now("alice", photo, "image/jpeg")
        assert uploaded.processed
        key = uploaded.key
        [entry] = Images(settings, backends).entries(settings.today(), "alice")
        assert (entry.source_key, entry.wave) == (key, "morning")


def test_deleting_an_upload_that_a_wave_processed_since_it_was_read_leaves_no_processed_image(settings):
    """The chaos test found it: a delete read the upload as pending, waited for the wave that held
    the lake, then removed its rows but not the processed image the wave had written."""
    put_uploads(settings.blob_url, DAY, {"alice/a.jpg": encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)})
    with Backends.open(settings) as backends:
        [pending] = Images(settings, backends).entries(DAY, "alice")
        assert pending.status == "pending"
        run_wave(settings, DAY, "morning", log=lambda _: None)  # while the delete request waits
        Images(settings, backends).delete([pending])
        assert not list(backends.blobs.list("processed/"))
        assert not Images(settings, backends).entries(DAY, "alice")


def test_a_long_reprocessing_and_a_wave_write_at_the_same_time(settings, monkeypatch):
    """No lock: a wave records its uploads while a reprocessing job rewrites another user's rows;
    every commit lands (a lost race is retried), and each upload keeps exactly one row."""
    monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "2")
    settings = type(settings)()
    photos = {f"bob/{k}.jpg": encode(synthetic_photo(32, 32, seed=k), "JPEG", quality=90) for k in range(6)}
    put_uploads(settings.blob_url, DAY, photos)
    run_wave(settings, DAY, "morning", log=lambda _: None)
    put_uploads(
        settings.blob_url, DAY, {f"ann/{k}.jpg": encode(synthetic_photo(32, 32, seed=9 + k), "JPEG") for k in range(6)}
    )
    waved = threading.Thread(target=run_wave, args=(settings, DAY, "evening"), kwargs={"log": lambda _: None})
    with Backends.open(settings) as backends:
        entries = Images(settings, backends).entries(DAY, "bob")
        waved.start()
        report = Images(settings, backends).reprocess(entries)
    waved.join(120)
    assert report.processed == 6
    images = lake_of(settings).read("images")
    keys = images.column("source_key").to_pylist()
    assert len(keys) == len(set(keys)) == 12
    waves = dict(zip(keys, images.column("wave").to_pylist(), strict=True))
    assert {waves[k] for k in keys if "/bob/" in k} == {"api"} and {waves[k] for k in keys if "/ann/" in k} == {
        "evening"
    }


def test_a_name_whose_record_outlived_its_original_is_not_taken_again(settings):
    """The review found it: a delete that failed between the original and the rows left the rows;
    the same name uploaded again got the same key and id, and was taken as handled: never processed."""
    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    with Backends.open(settings) as backends:
        first = Images(settings, backends).upload_now("alice", photo, "image/jpeg", "IMG_0001.jpg").key
        backends.blobs.delete(first)  # the original is gone, its rows are not
        again = Images(settings, backends).store_upload("alice", photo, "image/jpeg", "IMG_0001.jpg")
    assert first.endswith("/IMG_0001.jpg") and again.endswith("/IMG_0001 (2).jpg")


@pytest.fixture(params=["embedded", "s3+mongodb"])
def any_settings(request):
    return request.getfixturevalue("settings" if request.param == "embedded" else "s3_settings")


def test_a_delete_that_races_a_wave_processing_the_same_upload_wins(any_settings, monkeypatch):
    """The wave has read the upload and written its processed JPEG when the delete runs (the upload
    is still pending then); the wave records it afterwards. After both: the image is gone from every
    read (API catalog, lake, MongoDB) and no processed JPEG is left."""
    from graywave.errors import NotFound
    from graywave.service import batch
    from graywave.storage.blobs import open_blob_store

    settings = any_settings
    photo = encode(synthetic_photo(64, 48, seed=3), "JPEG", quality=90)
    store = open_blob_store(settings.blob_url, settings.s3_endpoint_url)
    [key, kept] = put_uploads(store, DAY, {"alice/doomed.jpg": photo, "alice/kept.jpg": photo})
    processed, deleted = threading.Event(), threading.Event()
    real = batch.process_uploads

    def then_the_delete_runs(uploads, *args, **kwargs):
        result = real(uploads, *args, **kwargs)
        if any(upload.source_key == key for upload in uploads):  # the doomed upload's batch, not the other's
            processed.set()
            assert deleted.wait(60)
        return result

    monkeypatch.setattr(batch, "process_uploads", then_the_delete_runs)  # the wave's batches
    waving = threading.Thread(target=run_wave, args=(settings, DAY, "morning"), kwargs={"log": lambda _: None})
    waving.start()
    assert processed.wait(120)
    with Backends.open(settings) as backends:
        catalog = Images(settings, backends)
        entry = catalog.get(DAY, "alice", images.image_id_for(key))
        assert entry.status == "pending"
        processed_key = images.parse_upload_key(key).processed_key
        assert backends.blobs.exists(processed_key)  # the wave wrote it already
        Images(settings, backends).delete([entry])
        deleted.set()
        waving.join(120)
        with pytest.raises(NotFound):
            catalog.get(DAY, "alice", images.image_id_for(key))
        assert not backends.blobs.exists(processed_key)
        assert backends.lake.read("images").column("source_key").to_pylist() == [kept]
        assert [entry.source_key for entry in catalog.entries(DAY, "alice")] == [kept]


def _analytics(backends: Backends, day) -> None:
    from graywave.service.daily import daily_histograms, median_row, record_analytics, similar_users_table

    daily = daily_histograms(backends.lake, day)
    record_analytics(backends, daily, median_row(daily), similar_users_table(daily, 2, "l1"), "l1")


def _analytics_rows(backends: Backends) -> tuple[list[str], list[tuple[str, str]]]:
    daily = sorted(backends.lake.read("daily_user_histograms").column("user_id").to_pylist())
    similar = backends.lake.read("similar_users", columns=["user_id", "neighbour_id"]).to_pylist()
    return daily, sorted((row["user_id"], row["neighbour_id"]) for row in similar)


def test_deleting_a_rejected_upload_changes_no_analytics_and_a_processed_one_only_its_own(any_settings):
    """The prober found it: deleting alice's truncated upload (a reject, counted in nothing) removed
    her from the day's user histograms and other users' similar-users lists. Only a processed image's
    delete changes analytics: its owner's rows of that day."""
    photo = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
    put_uploads(
        blobs_of(any_settings),
        DAY,
        {
            "alice/a.jpg": photo,
            "alice/cut.jpg": photo[: len(photo) // 2],
            "bob/b.jpg": encode(synthetic_photo(64, 48, seed=2), "JPEG"),
            "carol/c.jpg": encode(synthetic_photo(64, 48, seed=3), "JPEG"),
        },
    )
    run_wave(any_settings, DAY, "morning", log=lambda _: None)
    with Backends.open(any_settings) as backends:
        _analytics(backends, DAY)
        before = _analytics_rows(backends)
        assert before[0] == ["alice", "bob", "carol"]
        entries = {entry.source_key.rsplit("/", 1)[1]: entry for entry in Images(any_settings, backends).entries(DAY)}
        assert entries["cut.jpg"].status == "rejected"
        Images(any_settings, backends).delete([entries["cut.jpg"]])
        assert _analytics_rows(backends) == before
        if isinstance(backends.catalog, MongoCatalog):
            assert backends.catalog.images.database["daily_user_histograms"].count_documents({}) == 3
        Images(any_settings, backends).delete([entries["b.jpg"]])
        daily, similar = _analytics_rows(backends)
        assert daily == ["alice", "carol"] and similar == [("alice", "carol"), ("carol", "alice")]
        if isinstance(backends.catalog, MongoCatalog):
            assert backends.catalog.images.database["daily_user_histograms"].count_documents({}) == 2


@pytest.mark.parametrize("stop_after", ["the record", "the originals", "the rows"])
def test_a_delete_that_stops_half_way_is_finished_by_the_next_wave(any_settings, monkeypatch, stop_after):
    """The prober found it: kill -9 of the API during an admin DELETE /images, after some originals
    were gone, left rows with no original: listed as processed, counted in analytics, and a PUT
    brought a deleted photo back. The delete's record, written first, lets the next wave finish it;
    until then a PUT of such an image finds it deleted."""
    from graywave.service.backends import Backends as BackendsClass

    photos = {f"alice/{k}.jpg": encode(synthetic_photo(48, 32, seed=k), "JPEG") for k in range(4)}
    keys = put_uploads(blobs_of(any_settings), DAY, photos)
    run_wave(any_settings, DAY, "morning", log=lambda _: None)

    class Killed(BaseException):
        """Stands for kill -9: nothing after it runs."""

    steps = {
        "the record": ("_carry_out", lambda real: lambda self, deletion: (_ for _ in ()).throw(Killed())),
        "the originals": ("forget", lambda real: lambda self, keys: (_ for _ in ()).throw(Killed())),
        "the rows": ("_forget_analytics", lambda real: lambda self, counted: (_ for _ in ()).throw(Killed())),
    }
    name, stop = steps[stop_after]
    with Backends.open(any_settings) as backends:
        _analytics(backends, DAY)
        doomed = [e for e in Images(any_settings, backends).entries(DAY, "alice") if e.source_key != keys[3]]
        with monkeypatch.context() as patched:
            patched.setattr(BackendsClass, name, stop(getattr(BackendsClass, name)))
            with pytest.raises(Killed):
                Images(any_settings, backends).delete(doomed)
        left = {e.source_key: e for e in Images(any_settings, backends).entries(DAY, "alice")}
        if stop_after == "the originals":  # originals gone, rows left: a PUT must not bring one back
            ghost = left[keys[0]]
            with pytest.raises(NotFound):
                Images(any_settings, backends).replace_and_reprocess(ghost, photos["alice/0.jpg"], "image/jpeg")
            assert not backends.blobs.exists(keys[0])
    _the_next_wave_finishes_the_delete(any_settings, keys[3])


def _the_next_wave_finishes_the_delete(settings, kept_key: str) -> None:
    """After the next wave, alice's upload ``kept_key`` is all that is left, everywhere."""
    run_wave(settings, DAY, "evening", log=lambda _: None)
    with Backends.open(settings) as backends:
        [kept] = Images(settings, backends).entries(DAY, "alice")
        assert kept.source_key == kept_key and kept.status == "processed"
        assert {b.key for b in backends.blobs.list("uploads/")} == {kept_key}
        assert {b.key for b in backends.blobs.list("processed/")} == {kept.record.processed_key}  # type: ignore[union-attr]
        assert not list(backends.blobs.list("deletions/"))
        assert backends.lake.read("daily_user_histograms").num_rows == 0  # alice's day counted deleted images
        if isinstance(backends.catalog, MongoCatalog):
            assert backends.catalog.images.count_documents({}) == 1
            assert backends.catalog.images.database["daily_user_histograms"].count_documents({}) == 0


DELETE_THEN_DIE = """
import os, signal, sys
from datetime import date
from graywave.config import Settings
from graywave.service.backends import Backends
from graywave.service.images import Images
from graywave.storage.mongo import MongoCatalog

steps_before_kill, day, doomed = int(sys.argv[1]), date.fromisoformat(sys.argv[2]), set(sys.argv[3:])
done = 0

def counted(real):
    def step(*args, **kwargs):
        global done
        if done == steps_before_kill:
            os.kill(os.getpid(), signal.SIGKILL)
        done += 1
        return real(*args, **kwargs)
    return step

settings = Settings()
with Backends.open(settings) as backends:
    entries = [e for e in Images(settings, backends).entries(day, "alice") if e.source_key in doomed]
    steps = [(backends.blobs, "delete"), (backends.lake, "delete")]
    if isinstance(backends.catalog, MongoCatalog):
        steps += [(backends.catalog, "forget"), (backends.catalog, "forget_analytics")]
    for target, name in steps:
        setattr(target, name, counted(getattr(target, name)))
    Images(settings, backends).delete(entries)
print(done)
"""


@pytest.mark.parametrize(
    "any_settings, steps_before_kill",
    [("embedded", 0), ("embedded", 3), ("embedded", 7), ("embedded", 10), ("s3+mongodb", 5)],
    indirect=["any_settings"],
)
def test_a_delete_killed_with_sigkill_at_any_step_is_finished_by_the_next_wave(any_settings, steps_before_kill):
    """The same as above with a real ``kill -9``: a process deleting three of alice's four images
    kills itself before its n-th delete of a blob, lake rows or MongoDB documents (11 on the embedded
    default, the last being its record's; 13 with MongoDB)."""
    import subprocess
    import sys

    photos = {f"alice/{k}.jpg": encode(synthetic_photo(48, 32, seed=k), "JPEG") for k in range(4)}
    keys = put_uploads(blobs_of(any_settings), DAY, photos)
    run_wave(any_settings, DAY, "morning", log=lambda _: None)
    with Backends.open(any_settings) as backends:
        _analytics(backends, DAY)
    died = subprocess.run(
        [sys.executable, "-c", DELETE_THEN_DIE, str(steps_before_kill), DAY.isoformat(), *keys[:3]],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    with Backends.open(any_settings) as backends:
        assert [blob.key for blob in backends.blobs.list("deletions/")]  # its record, left for the wave
    _the_next_wave_finishes_the_delete(any_settings, keys[3])
