from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from graywave.errors import LakeBusy
from graywave.records import ImageRecord, RejectRecord
from graywave.storage.blobs import Busy, LocalBlobStore
from graywave.storage.lake import Lake
from graywave.storage.s3 import S3BlobStore
from tests.records import append_images, append_rejects, image_record, reject_record


def image_row(key: str, user: str = "u1") -> ImageRecord:
    return image_record(key, user)


def reject_row(key: str) -> RejectRecord:
    return reject_record(key)


def filled(lake: Lake) -> Lake:
    append_images(lake, date(2026, 11, 25), "morning", [image_row("k1"), image_row("k2", "u2")])
    append_images(lake, date(2026, 11, 26), "evening", [image_row("k3")])
    append_rejects(lake, date(2026, 11, 25), "morning", [reject_row("k4")])
    return lake


@pytest.fixture
def local_lake(tmp_path) -> Lake:
    return filled(Lake(LocalBlobStore(tmp_path / "lake")))


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path) -> Lake:
    """The same lake on a local folder and on S3 (moto's server, read through pyarrow's S3 client)."""
    if request.param == "local":
        return filled(Lake(LocalBlobStore(tmp_path / "lake")))
    s3 = request.getfixturevalue("local_s3")
    return filled(Lake(S3BlobStore(f"s3://{s3.new_bucket()}/lake", endpoint_url=s3.endpoint)))


def test_rows_round_trip_with_partitions(lake):
    images = lake.read("images")
    assert images.num_rows == 3
    by_key = {row["source_key"]: row for row in images.to_pylist()}
    assert by_key["k3"]["date"] == date(2026, 11, 26) and by_key["k3"]["wave"] == "evening"
    assert by_key["k1"]["histogram"] == [8] + [0] * 15
    assert lake.read("images", [date(2026, 11, 25)]).num_rows == 2
    assert lake.read("rejects", [date(2026, 1, 1)]).num_rows == 0


def test_source_keys_by_day(lake):
    assert lake.source_keys("images", [date(2026, 11, 25), date(2026, 11, 26)]) == {"k1", "k2", "k3"}
    assert lake.source_keys("rejects", [date(2026, 11, 25)]) == {"k4"}


def test_no_file_for_no_rows_and_partition_layout(local_lake, tmp_path):
    assert local_lake.append("images", ImageRecord.to_arrow([]), day=date(2026, 11, 27), wave="morning") is None
    files = sorted(p.relative_to(tmp_path / "lake").as_posix() for p in (tmp_path / "lake").rglob("*.parquet"))
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "images/date=2026-11-25/wave=morning",
        "images/date=2026-11-26/wave=evening",
        "rejects/date=2026-11-25/wave=morning",
    ]


def test_polars_and_duckdb_read_both_tables_with_hive_partitions(local_lake):
    root = local_lake.url
    images = pl.scan_parquet(f"{root}/images/**/*.parquet", hive_partitioning=True).collect()
    assert images.height == 3
    assert images.schema["date"] == pl.Date and images.schema["wave"] == pl.String
    assert images.schema["histogram"] == pl.List(pl.Int64)
    rejects = pl.scan_parquet(f"{root}/rejects/**/*.parquet", hive_partitioning=True).collect()
    assert rejects.select("reason", "wave").rows() == [("corrupt", "morning")]
    count = duckdb.sql(
        f"select count(*), min(date), max(wave) from read_parquet('{root}/images/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert count == [(3, date(2026, 11, 25), "morning")]
    assert duckdb.sql(
        f"select reason from read_parquet('{root}/rejects/**/*.parquet', hive_partitioning=true)"
    ).fetchall() == [("corrupt",)]


def test_leftover_temporary_files_are_invisible(local_lake):
    partition = Path(local_lake.url) / local_lake.partition_prefix("images", date(2026, 11, 25), "morning")
    (partition / ".graywave-tmp-0123").write_bytes(b"half a file")
    assert local_lake.read("images").num_rows == 3
    assert pl.scan_parquet(f"{local_lake.url}/images/**/*.parquet", hive_partitioning=True).collect().height == 3


def test_one_writer_at_a_time(local_lake):
    other = Lake(LocalBlobStore(local_lake.url))
    with local_lake.exclusive(), pytest.raises(Busy, match="held by another process"), other.exclusive():
        pass
    with local_lake.exclusive():  # released
        pass


class Holder(threading.Thread):
    """Another writer holding the lake (an API write, a wave) until ``release`` is set."""

    def __init__(self, lake: Lake):
        super().__init__(name="holder", daemon=True)
        self.lake, self.held, self.release = lake, threading.Event(), threading.Event()

    def run(self) -> None:
        with self.lake.exclusive():
            self.held.set()
            self.release.wait(timeout=60)

    def __enter__(self) -> Holder:
        self.start()
        assert self.held.wait(timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.join(timeout=30)


def test_a_writer_waits_a_bounded_time_for_the_lake(lake):
    """A short write (an API upload's few hundred ms) delays the next writer instead of failing it."""
    with Holder(lake) as holder:
        threading.Timer(1.0, holder.release.set).start()
        started = time.monotonic()
        with lake.exclusive(wait_s=10):
            assert time.monotonic() - started >= 0.9  # it got the lake once the holder let go
    with Holder(lake):
        started = time.monotonic()
        with pytest.raises(LakeBusy, match="another wave"), lake.exclusive(wait_s=0.5):
            pass
        assert time.monotonic() - started >= 0.5
        with pytest.raises(LakeBusy):  # no wait asked: refused at once
            lake.exclusive().__enter__()


def test_every_write_changes_the_generation(lake):
    seen = {lake.generation()}
    append_images(lake, date(2026, 11, 27), "morning", [image_row("k5")])
    seen.add(lake.generation())
    lake.replace("daily_median", pa.table({"users": [1], "histogram": [[1.0]]}), day=date(2026, 11, 27))
    seen.add(lake.generation())
    assert lake.remove_rows("images", ["source_key"], {"k5"}) == 1
    seen.add(lake.generation())
    assert len(seen) == 4
    assert lake.remove_rows("images", ["source_key"], {"no such key"}) == 0  # nothing written, nothing changed
    assert lake.generation() in seen


def test_scan_pushes_filters_and_projections_down(lake):
    found = lake.scan(
        "images", days=[date(2026, 11, 25)], columns=["source_key", "wave"], filter=ds.field("user_id") == "u2"
    )
    assert found.to_pylist() == [{"source_key": "k2", "wave": "morning"}]


def test_lookup_opens_only_the_files_that_hold_the_value_and_follows_rewrites(lake):
    index = lake.index("images", "user_id")
    assert [f.split("/")[-3] for f in index.files_with("u1")] == ["date=2026-11-25", "date=2026-11-26"]
    assert [f.split("/")[-3] for f in index.files_with("u2")] == ["date=2026-11-25"]
    assert index.files_with("nobody") == []
    first = lake.lookup("images", "user_id", "u1", columns=["source_key", "date"])
    assert sorted(first.column("source_key").to_pylist()) == ["k1", "k3"]
    # A rewrite under the same file name (k1 leaves the file it shares with k2) is seen at once ...
    lake.remove_rows("images", ["source_key"], {"k1"})
    assert lake.lookup("images", "user_id", "u1", columns=["source_key"]).column("source_key").to_pylist() == ["k3"]
    assert [f.split("/")[-3] for f in index.files_with("u1")] == ["date=2026-11-26"]
    # ... and so is a new file.
    append_images(lake, date(2026, 11, 27), "morning", [image_row("k6"), image_row("k7", "u2")])
    assert sorted(lake.lookup("images", "user_id", "u2", columns=["source_key"]).column("source_key").to_pylist()) == [
        "k2",
        "k7",
    ]
    one = lake.lookup("images", "image_id", image_record("k7").image_id, filter=ds.field("user_id") == "u2")
    assert ImageRecord.from_arrow(one) == [image_row("k7", "u2")]


def test_a_writer_killed_in_the_middle_of_a_write_leaves_no_stale_reader(lake):
    assert lake.lookup("images", "user_id", "u9").num_rows == 0  # the reader's index is built
    writing = lake._changing()
    writing.__enter__()  # ... and the writer dies (kill -9) after its file, before it settles
    lake._write(
        "images",
        f"{lake.partition_prefix('images', date(2026, 11, 27), 'morning')}part-x.parquet",
        ImageRecord.to_arrow([image_row("k9", "u9")]),
    )
    assert not lake.settled(lake.generation())
    assert lake.lookup("images", "user_id", "u9").column("source_key").to_pylist() == ["k9"]
    with lake.exclusive():  # the next writer settles the lake
        assert lake.settled(lake.generation())
    settled = lake.generation()
    with lake.exclusive():  # and a writer that finds it settled changes nothing
        pass
    assert lake.generation() == settled
