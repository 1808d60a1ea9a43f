"""Waves on the production architecture: S3 (SeaweedFS) for blobs and lake, MongoDB (SecantusDB)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pymongo
import pytest

from graywave.config import Settings
from graywave.errors import BackendUnavailable
from graywave.flows.wave import wave_flow
from graywave.storage.s3 import S3BlobStore
from tests.helpers import DAY, EXPECTED_REJECTS, GRAYWAVE, blobs_of, lake_of, phone_jpeg, put_uploads


def images_collection(settings: Settings):
    client = pymongo.MongoClient(settings.mongodb_uri.get_secret_value())
    return client[settings.mongodb_database]["images"]


def assert_exactly_once_everywhere(settings: Settings, keys: list[str]) -> None:
    lake = lake_of(settings)
    images = lake.read("images").to_pylist()
    rejects = lake.read("rejects").to_pylist()
    assert sorted(r["source_key"] for r in images + rejects) == sorted(keys)
    documents = list(images_collection(settings).find({}, {"source_key": 1, "status": 1, "processed_key": 1}))
    assert sorted(d["source_key"] for d in documents) == sorted(keys)
    assert sum(d["status"] == "processed" for d in documents) == len(images)
    store = blobs_of(settings)
    for row in images:
        assert len(store.read(row["processed_key"])) == row["processed_bytes"]


def test_a_wave_on_s3_and_mongodb_and_its_rerun(s3_settings, phone_files):
    keys = put_uploads(blobs_of(s3_settings), DAY, phone_files)
    summary = wave_flow(day=DAY, name="morning")
    assert (summary.processed, summary.rejected) == (7, len(EXPECTED_REJECTS))
    assert_exactly_once_everywhere(s3_settings, keys)

    collection = images_collection(s3_settings)
    rejected = {d["source_key"].split("/", 2)[2]: d["reason"] for d in collection.find({"status": "rejected"})}
    assert rejected == EXPECTED_REJECTS
    heic = collection.find_one({"file_name": "photo.heic"})
    assert heic["image_url"] == f"{s3_settings.blob_url}/{heic['source_key']}"
    assert sum(heic["histogram"]) == heic["width"] * heic["height"]
    assert {"user_time", "day_status"} <= set(collection.index_information())

    lake_files = lake_of(s3_settings).files("images")
    again = wave_flow(day=DAY, name="morning")
    assert (again.processed, again.rejected, again.skipped) == (0, 0, len(keys))
    assert lake_of(s3_settings).files("images") == lake_files
    assert collection.count_documents({}) == len(keys)


def test_a_mongodb_that_stays_down_fails_the_wave_and_loses_nothing(s3_settings, phone_files, monkeypatch):
    keys = put_uploads(blobs_of(s3_settings), DAY, {"ann/a.jpg": phone_files["ann/plain.jpg"]})
    from tests.helpers import free_port

    monkeypatch.setenv("GRAYWAVE_MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    monkeypatch.setenv("GRAYWAVE_BACKEND_RETRY_S", "1")
    with pytest.raises(BackendUnavailable, match="MongoDB did not accept"):
        wave_flow(day=DAY, name="morning")
    assert lake_of(s3_settings).files("images") == []  # nothing is recorded as handled

    monkeypatch.setenv("GRAYWAVE_MONGODB_URI", s3_settings.mongodb_uri.get_secret_value())
    assert wave_flow(day=DAY, name="morning").processed == 1
    assert_exactly_once_everywhere(s3_settings, keys)


def test_an_s3_server_that_restarts_mid_wave_is_waited_for(s3_settings, phone_files, local_s3):
    keys = put_uploads(blobs_of(s3_settings), DAY, {"ann/a.jpg": phone_files["ann/plain.jpg"]})
    local_s3.stop()
    restart = threading.Timer(1.5, local_s3.start)
    restart.start()
    try:
        summary = wave_flow(day=DAY, name="morning")  # its first S3 calls fail until the restart
    finally:
        restart.join()
    assert summary.processed == 1
    assert_exactly_once_everywhere(s3_settings, keys)


@pytest.mark.slow
@pytest.mark.timeout(900)  # three waves: minutes beside a CPU hog
def test_killed_waves_on_s3_and_mongodb_converge_to_exactly_once(s3_settings, tmp_path, prefect_server):
    files = {f"user{i:02d}/IMG_{i}.jpg": phone_jpeg(i) for i in range(30)}
    files |= {f"user{i:02d}/broken.jpg": b"\xff\xd8\xff\xe0 broken" for i in range(3)}
    keys = put_uploads(blobs_of(s3_settings), DAY, files)
    env = os.environ | {
        "GRAYWAVE_BATCH_SIZE": "2",
        "GRAYWAVE_LAKE_FLUSH_ROWS": "2",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": prefect_server,  # the production set-up: a Prefect server, not one per command
    }
    command = [GRAYWAVE, "wave", "run", "--date", DAY.isoformat(), "--name", "morning"]
    lake = lake_of(s3_settings)
    for new_files in (1, 4):
        before = len(lake.files("images")) + len(lake.files("rejects"))
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        deadline = time.monotonic() + 300
        while len(lake.files("images")) + len(lake.files("rejects")) < before + new_files:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)  # the wave, as in a machine crash
        process.wait()  # no lease to wait out: the lake's commits are conditional PUTs, not a lock
    assert 0 < len(lake.read("images")) < 30

    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert_exactly_once_everywhere(s3_settings, keys)


@pytest.mark.slow
def test_a_wave_waits_for_a_store_that_restarts_slowly_as_long_as_the_settings_say(s3_settings, phone_files, local_s3):
    """Under load the S3 server's restart took longer than botocore's retries (8 attempts, a random
    back-off: from seconds to about half a minute), and the wave gave up on "connection refused".
    It waits GRAYWAVE_BACKEND_RETRY_S (60 s by default) for a store that refuses connections."""
    keys = put_uploads(blobs_of(s3_settings), DAY, {"ann/a.jpg": phone_files["ann/plain.jpg"]})
    assert s3_settings.backend_retry_s == 60
    local_s3.stop()
    restart = threading.Timer(25, local_s3.start)  # down for 25 s, then its own start-up
    restart.start()
    began = time.monotonic()
    try:
        summary = wave_flow(day=DAY, name="morning")
    finally:
        restart.join()
    assert summary.processed == 1, f"after {time.monotonic() - began:.0f} s"
    assert_exactly_once_everywhere(s3_settings, keys)


def test_a_store_that_stays_unreachable_fails_once_the_retry_window_has_passed():
    """It tries again through the window, and not after it: botocore's own retries went on past it
    (8 attempts in all, with a random back-off: 8 to 13 s in all for a window of 4 s)."""
    from tests.helpers import free_port

    store = S3BlobStore("s3://nowhere/blobs", endpoint_url=f"http://127.0.0.1:{free_port()}", retry_s=4)
    tries: list[float] = []
    store.client.meta.events.register("before-send.s3", lambda **_: tries.append(time.monotonic()))
    began = time.monotonic()
    with pytest.raises(BackendUnavailable, match="Could not connect"):
        store.check()
    waited = time.monotonic() - began
    assert len(tries) > 2 and 3 < tries[-1] - tries[0] < 4 + 1, tries  # the last try within a wake-up of the window
    assert waited < 4 + 10, waited  # and then the failure (a loaded machine's slack)
