"""Writers of the lake in real processes, at once: no lock, and every upload recorded once.

Each test runs on a local folder and on the S3 server of the tests: delta-rs's commits create each
log entry atomically (a hard link locally, a conditional PUT on S3), and a commit that lost the race
is retried on the new version by ``Lake`` until it lands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import Lake
from graywave.storage.s3 import S3BlobStore

RECORDER = """
import sys
from graywave.records import ImageRecord
from graywave.storage.blobs import open_blob_store
from graywave.storage.lake import CommitInfo, Lake
from tests.helpers import DAY, image_record

url, endpoint, wave, first, last, step = sys.argv[1:7]
lake = Lake(open_blob_store(url, endpoint or None))
day = DAY
for start in range(int(first), int(last), int(step)):
    keys = range(start, start + 2 * int(step))
    rows = [image_record(f"uploads/2026-11-25/u{k % 7}/{k}.jpg", f"u{k % 7}") for k in keys]
    info = CommitInfo("record", day, wave)
    lake.record("images", ImageRecord.to_arrow(rows), day=day, wave=wave, among=[day], info=info)
    print(start, flush=True)
"""


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> tuple[str, str]:
    """A lake URL and the S3 endpoint (empty for a local folder)."""
    if request.param == "local":
        return str(tmp_path / "lake"), ""
    s3 = request.getfixturevalue("local_s3")
    return f"s3://{s3.new_bucket()}/lake", s3.endpoint


def lake_at(url: str, endpoint: str) -> Lake:
    return Lake(S3BlobStore(url, endpoint_url=endpoint) if endpoint else LocalBlobStore(url))


def recorder(url: str, endpoint: str, wave: str, first: int, last: int, step: int) -> subprocess.Popen[str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    command = [sys.executable, "-c", RECORDER, url, endpoint, wave, str(first), str(last), str(step)]
    return subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def counts(lake: Lake) -> Counter[str]:
    return Counter(lake.read("images").column("source_key").to_pylist())


def test_two_processes_recording_overlapping_uploads_at_once_record_each_once(where):
    """Each process records 40 batches whose uploads overlap the next batch's and the other
    process's: 2 x 40 commits into one partition at once, many of them lost races."""
    url, endpoint = where
    processes = [recorder(url, endpoint, wave, 0, 200, 5) for wave in ("morning", "manual")]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    found = counts(lake_at(url, endpoint))
    assert set(found.values()) == {1}
    assert sorted(found) == sorted(f"uploads/2026-11-25/u{k % 7}/{k}.jpg" for k in range(205))


def test_kill_9_in_the_middle_of_commits_then_a_rerun_gives_the_same_rows(where):
    """A writer killed at any point (writing data files, writing its log entry) leaves the table
    readable, with whole commits only; a rerun of the same recordings converges to one row each."""
    url, endpoint = where
    for delay in (0.8, 1.6, 2.4):
        process = recorder(url, endpoint, "morning", 0, 300, 5)
        assert process.stdout is not None
        process.stdout.readline()  # it has committed once: the table exists
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        found = counts(lake_at(url, endpoint))
        assert set(found.values()) == {1}  # whole commits only, each upload once
    rerun = recorder(url, endpoint, "morning", 0, 300, 5)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    found = counts(lake_at(url, endpoint))
    assert set(found.values()) == {1} and len(found) == 305
