"""The lake's reads wait for an S3 store that is down as long as GRAYWAVE_BACKEND_RETRY_S says."""

from __future__ import annotations

import threading
import time

import pytest

from graywave.storage.blobs import open_blob_store
from graywave.storage.lake import Lake
from tests.helpers import DAY, append_images, image_record

RETRY_S = 40.0
OUTAGE_S = 15.0
"""Longer than the 11 s after which delta-rs's and Polars' reads gave up (object_store's 10 retries)."""


@pytest.mark.timeout(240)
def test_a_lake_read_waits_out_an_s3_outage_within_the_retry_window(s3_settings, local_s3):
    def lake() -> Lake:  # a fresh lake, as a new process (the CLI, a query) opens it
        store = open_blob_store(s3_settings.lake_url, s3_settings.s3_endpoint_url, retry_s=RETRY_S)
        return Lake(store)

    records = [image_record(user=f"u{i}", name=f"{i}.jpg") for i in range(5)]
    append_images(lake(), DAY, "morning", records)
    reader = lake()
    local_s3.stop()
    restart = threading.Timer(OUTAGE_S, local_s3.start)
    restart.start()
    began = time.monotonic()
    try:
        images = reader.read("images")
        waited_s = time.monotonic() - began
    finally:
        restart.join()
    print(f"the read waited {waited_s:.1f} s")
    assert sorted(images.column("user_id").to_pylist()) == [f"u{i}" for i in range(5)]
    assert waited_s >= OUTAGE_S


@pytest.mark.timeout(240)
def test_polars_reads_of_the_lakes_files_wait_out_an_s3_outage_too(s3_settings, local_s3):
    """The lake's data files are read by Polars (``scan_parquet``), whose retry options are its own
    (``max_retries`` and ``retry_timeout_ms``, integers): ``Lake.storage_options`` has them."""
    import polars as pl
    from deltalake import DeltaTable

    store = open_blob_store(s3_settings.lake_url, s3_settings.s3_endpoint_url, retry_s=RETRY_S)
    lake = Lake(store)
    append_images(lake, DAY, "morning", [image_record(user=f"u{i}", name=f"{i}.jpg") for i in range(5)])
    files = DeltaTable(lake.uri("images"), storage_options=lake.delta_options()).file_uris()
    local_s3.stop()
    restart = threading.Timer(OUTAGE_S, local_s3.start)
    restart.start()
    began = time.monotonic()
    try:
        frame = pl.scan_parquet(files, storage_options=lake.storage_options()).collect()
        waited_s = time.monotonic() - began
    finally:
        restart.join()
    print(f"Polars waited {waited_s:.1f} s")
    assert sorted(frame["user_id"].to_list()) == [f"u{i}" for i in range(5)]
    assert waited_s >= OUTAGE_S
