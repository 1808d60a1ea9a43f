"""An original overwritten after its wave (through a presigned POST still valid, or on the local
folder): the next wave sees that the listing no longer matches the size and time its row was made
from, processes it again and replaces the row; no row stays that disagrees with its original."""

from __future__ import annotations

from datetime import date

import httpx
import numpy as np
import pytest

from graywave.config import Settings
from graywave.kernels import select_device
from graywave.records import image_id_for
from graywave.service.backends import Backends
from graywave.service.batch import Upload, process_uploads
from graywave.service.images import Images
from graywave.service.samples import encode
from graywave.service.wave import Recorded, Recorder, run_wave
from graywave.storage.layout import parse_upload_key
from graywave.storage.s3 import S3BlobStore
from graywave.storage.uploads import presign_upload
from tests.helpers import DAY, SERVER_TIMEOUT_S, blobs_of, decode_processed, lake_of, put_uploads

BLACK = encode(np.zeros((48, 64, 3), np.uint8), "JPEG")
WHITE = encode(np.full((60, 80, 3), 255, np.uint8), "JPEG")
NOT_A_PHOTO = b"this is no photo at all"


class Phone:
    """Writes one upload of alice's, again and again: through one presigned POST on S3 (the policy is
    still valid for every write), with a plain write on the local folder."""

    def __init__(self, settings: Settings, day: date):
        self.store = blobs_of(settings)
        if isinstance(self.store, S3BlobStore):
            self.post = presign_upload(self.store, day, "alice", "image/jpeg", max_bytes=10_000_000, expires_s=600)
            self.key = self.post.key
        else:
            self.key = put_uploads(self.store, day, {"alice/IMG_0001.jpg": BLACK})[0]

    def send(self, data: bytes) -> None:
        if isinstance(self.store, S3BlobStore):
            sent = httpx.post(
                self.post.url,
                data=self.post.fields,
                files={"file": ("p.jpg", data, "image/jpeg")},
                timeout=SERVER_TIMEOUT_S,
            )
            assert sent.status_code == 204, sent.text
        else:
            self.store.write(self.key, data, "image/jpeg")


def rows_of(settings: Settings, key: str) -> dict[str, list[dict]]:
    lake = lake_of(settings)
    return {
        table: [r for r in lake.read(table).to_pylist() if r["source_key"] == key] for table in ("images", "rejects")
    }


@pytest.fixture(params=["local folder", "s3+mongodb"])
def deployment(request) -> Settings:
    return request.getfixturevalue("settings" if request.param == "local folder" else "s3_settings")


def test_an_original_overwritten_after_its_wave_is_processed_again_by_the_next(deployment: Settings):
    settings, logs = deployment, []
    phone = Phone(settings, DAY)
    phone.send(BLACK)
    assert run_wave(settings, DAY, "morning", log=logs.append).processed == 1
    processed_key = parse_upload_key(phone.key).processed_key
    assert decode_processed(blobs_of(settings).read(processed_key)).getextrema() == (0, 0)

    phone.send(WHITE)  # the same key, after it was processed: another size, another time
    again = run_wave(settings, DAY, "evening", log=logs.append)
    assert (again.processed, again.skipped) == (1, 0)
    rows = rows_of(settings, phone.key)
    assert rows["rejects"] == [] and len(rows["images"]) == 1
    row = rows["images"][0]
    assert (row["source_bytes"], row["width"], row["height"]) == (len(WHITE), 80, 60)
    assert row["histogram"][-1] == 80 * 60 and sum(row["histogram"]) == 80 * 60  # all white now
    assert row["wave"] == "evening" and row["date"] == DAY  # replaced in its partition, the day it counts in
    assert decode_processed(blobs_of(settings).read(processed_key)).getextrema() == (255, 255)
    with Backends.open(settings) as backends:  # what the API serves (MongoDB's document where configured)
        entry = Images(settings, backends).handled("alice", image_id_for(phone.key))
        assert entry is not None and entry.source_bytes == len(WHITE)
        served = Images(settings, backends).processed_image(
            entry
        )  # S3: the SigV4 presigned GET that the API redirects to
        jpeg = (
            served.data
            if served.url is None
            else httpx.get(served.url, timeout=SERVER_TIMEOUT_S).raise_for_status().content
        )
        assert decode_processed(jpeg).getextrema() == (255, 255)

    unchanged = run_wave(settings, DAY, "night", log=logs.append)
    assert (unchanged.processed, unchanged.rejected, unchanged.skipped) == (0, 0, 1)  # once per version


def test_an_original_overwritten_with_what_is_no_photo_becomes_a_reject_and_loses_its_image(deployment):
    settings = deployment
    phone = Phone(settings, DAY)
    phone.send(BLACK)
    run_wave(settings, DAY, "morning", log=lambda _: None)
    processed_key = parse_upload_key(phone.key).processed_key
    assert blobs_of(settings).exists(processed_key)

    phone.send(NOT_A_PHOTO)
    summary = run_wave(settings, DAY, "evening", log=lambda _: None)
    assert (summary.processed, summary.rejected) == (0, 1)
    rows = rows_of(settings, phone.key)
    assert rows["images"] == []
    assert [(r["reason"], r["source_bytes"]) for r in rows["rejects"]] == [("not_an_image", len(NOT_A_PHOTO))]
    assert not blobs_of(settings).exists(processed_key)  # no JPEG of the photo that is no longer there

    phone.send(WHITE)  # and back to a photo: the reject is replaced by the image
    assert run_wave(settings, DAY, "night", log=lambda _: None).processed == 1
    rows = rows_of(settings, phone.key)
    assert rows["rejects"] == [] and [r["source_bytes"] for r in rows["images"]] == [len(WHITE)]


def test_two_versions_of_one_upload_in_one_flush_leave_the_later_row_only(settings):
    """A draining wave's rounds share a flush: an upload processed in one round and overwritten before
    the next round lists it again has two rows in the buffer. The later one is recorded, once."""
    key = put_uploads(settings.blob_url, DAY, {"alice/IMG_0002.jpg": BLACK})[0]
    recorded = {}

    def a_round(data: bytes) -> None:
        blobs_of(settings).write(key, data, "image/jpeg")
        [blob] = [b for b in blobs_of(settings).list(key) if b.key == key]
        upload = Upload(parse_upload_key(key), blob)
        result = process_uploads([upload], blobs_of(settings), settings, select_device("cpu"))
        changed = {key: recorded[key]} if key in recorded else {}
        recorder.add(result.images, result.rejects, changed)
        recorded[key] = Recorded.of([*result.images, *result.rejects][0], DAY)

    with Backends.open(settings) as backends:
        recorder = Recorder(backends, DAY, "morning", flush_rows=100)
        a_round(BLACK)
        a_round(WHITE)
        a_round(NOT_A_PHOTO)  # the last version is no photo: its JPEG of the first round goes too
        recorder.flush()
    rows = rows_of(settings, key)
    assert rows["images"] == [] and [r["source_bytes"] for r in rows["rejects"]] == [len(NOT_A_PHOTO)]
    assert not blobs_of(settings).exists(parse_upload_key(key).processed_key)
