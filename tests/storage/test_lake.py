from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from graywave.errors import BackendUnavailable, NotFound
from graywave.records import ImageRecord, RejectRecord
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import TABLES, CommitInfo, Lake, table_schema
from graywave.storage.s3 import S3BlobStore
from tests.helpers import GRAYWAVE, append_images, append_rejects, image_record, reject_record

D25, D26, D27 = date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)


def filled(lake: Lake) -> Lake:
    append_images(lake, D25, "morning", [image_record("k1", "u1"), image_record("k2", "u2")])
    append_images(lake, D26, "evening", [image_record("k3", "u1")])
    append_rejects(lake, D25, "morning", [reject_record("k4")])
    return lake


@pytest.fixture
def local_lake(tmp_path) -> Lake:
    return filled(Lake(LocalBlobStore(tmp_path / "lake")))


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path) -> Lake:
    """The same lake on a local folder and on S3 (the test S3 server, written by delta-rs, read by pyarrow)."""
    if request.param == "local":
        return filled(Lake(LocalBlobStore(tmp_path / "lake")))
    s3 = request.getfixturevalue("local_s3")
    return filled(Lake(S3BlobStore(f"s3://{s3.new_bucket()}/lake", endpoint_url=s3.endpoint)))


def test_rows_round_trip_with_their_day_and_wave(lake):
    images = lake.read("images")
    assert images.num_rows == 3
    by_key = {row["source_key"]: row for row in images.to_pylist()}
    assert by_key["k3"]["date"] == D26 and by_key["k3"]["wave"] == "evening"
    assert by_key["k1"]["histogram"] == [8] + [0] * 15
    assert lake.read("images", [D25]).num_rows == 2
    assert lake.read("rejects", [date(2026, 1, 1)]).num_rows == 0
    assert ImageRecord.from_arrow(lake.read("images", [D26])) == [image_record("k3", "u1")]


def test_source_keys_by_day(lake):
    assert lake.source_keys("images", [D25, D26]) == {"k1", "k2", "k3"}
    assert lake.source_keys("rejects", [D25]) == {"k4"}


def test_the_tables_are_delta_tables_partitioned_by_date(local_lake, tmp_path):
    from deltalake import DeltaTable

    images = DeltaTable(str(tmp_path / "lake" / "images"))
    assert images.metadata().partition_columns == ["date"]
    assert images.version() == 2  # created, then one commit per wave
    folders = sorted({p.parent.name for p in (tmp_path / "lake" / "images").rglob("*.parquet")})
    assert folders == ["date=2026-11-25", "date=2026-11-26"]


def test_recording_is_idempotent_an_insert_only_merge_keyed_on_the_source(lake):
    assert append_images(lake, D25, "rerun", [image_record("k1", "u1"), image_record("k5", "u1")]) == 1
    assert append_images(lake, D25, "rerun", [image_record("k1", "u1"), image_record("k5", "u1")]) == 0
    keys = lake.read("images").column("source_key").to_pylist()
    assert sorted(keys) == ["k1", "k2", "k3", "k5"]
    # A row of another partition among those named counts as recorded too (an upload of day X is
    # handled by a wave of X or X + 1): the next day's wave does not record it again.
    info = CommitInfo("record", D26, "morning")
    rows = ImageRecord.to_arrow([image_record("k1", "u1")])
    assert lake.record("images", rows, day=D26, wave="morning", among=[D25, D26], info=info) == 0
    assert lake.record("images", rows, day=D27, wave="morning", among=[D27], info=info) == 1


def test_no_commit_for_no_rows(local_lake):
    version = local_lake.version("images")
    assert append_images(local_lake, D27, "morning", []) == 0
    assert local_lake.version("images") == version


def test_polars_duckdb_and_pyarrow_read_the_tables(local_lake):
    uri = local_lake.uri("images")
    images = pl.read_delta(uri)
    assert images.height == 3 and images.schema["date"] == pl.Date
    assert pl.scan_delta(local_lake.uri("rejects")).select("reason", "wave").collect().rows() == [
        ("corrupt", "morning")
    ]
    from deltalake import DeltaTable

    table = DeltaTable(uri)
    with pytest.raises(pa.ArrowNotImplementedError, match="string_view"):  # delta-rs #4579, as it stands
        table.to_pyarrow_table(filters=[("user_id", "=", "u2")])
    read = table.to_pyarrow_table(columns=["user_id", "source_key"])  # docs/data.md's way: read, then filter
    assert read.filter(ds.field("user_id") == "u2").column("source_key").to_pylist() == ["k2"]
    import duckdb_ext

    con = duckdb.connect()
    con.execute(f"SET extension_directory = '{Path(duckdb_ext.__path__[0]) / 'extensions'}'")  # from PyPI
    con.execute("LOAD delta")
    assert con.sql(f"select count(*) from delta_scan('{uri}') where user_id = 'u1'").fetchall() == [(2,)]


def test_a_stray_or_copied_parquet_file_is_never_read(local_lake, tmp_path):
    """Only files that a commit references are part of a table: a copied part file, a 0-byte file, a
    file of another schema, a folder of a garbage partition change nothing."""
    partition = tmp_path / "lake" / "images" / "date=2026-11-25"
    original = next(partition.glob("*.parquet"))
    (partition / "part-copy.parquet").write_bytes(original.read_bytes())
    (partition / "part-empty.parquet").write_bytes(b"")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": [1]}), buffer)
    (partition / "part-other.parquet").write_bytes(buffer.getvalue())
    (tmp_path / "lake" / "images" / "date=garbage").mkdir()
    (tmp_path / "lake" / "images" / "date=garbage" / "x.parquet").write_bytes(b"junk")
    fresh = Lake(LocalBlobStore(tmp_path / "lake"))
    assert sorted(fresh.read("images").column("source_key").to_pylist()) == ["k1", "k2", "k3"]
    assert fresh.lookup("images", "user_id", "u1").num_rows == 2


def test_every_commit_changes_the_version_and_records_who_wrote_it(lake):
    before = lake.version("images")
    info = CommitInfo("record", D27, "morning", flow_run="1c0ffee0-0000-4000-8000-000000000000")
    lake.record(
        "images", ImageRecord.to_arrow([image_record("k5", "u1")]), day=D27, wave="morning", among=[D27], info=info
    )
    assert lake.version("images") == before + 1
    latest = lake.history("images", 1)[0]
    assert latest.version == before + 1 and latest.operation == "MERGE"
    assert latest.graywave == {"operation": "record", "wave": "morning", "day": "2026-11-27", "flow_run": info.flow_run}
    assert lake.delete("images", {"source_key": ["k5"]}, info=CommitInfo("delete")) == 1
    assert lake.version("images") == before + 2
    assert lake.history("images", 1)[0].graywave == {"operation": "delete"}
    assert lake.delete("images", {"source_key": ["no such key"]}, info=CommitInfo("delete")) == 0


def test_the_daily_outputs_are_replaced_per_day_in_one_overwrite_commit(lake):
    info = CommitInfo("analytics", D25)
    lake.replace("daily_median", pa.table({"users": [1], "histogram": [[1.0]]}), day=D25, info=info)
    lake.replace("daily_median", pa.table({"users": [5], "histogram": [[0.5]]}), day=D26, info=info)
    version = lake.version("daily_median")
    lake.replace("daily_median", pa.table({"users": [2], "histogram": [[0.25]]}), day=D25, info=info)
    assert lake.version("daily_median") == version + 1
    rows = sorted(lake.read("daily_median").to_pylist(), key=lambda row: row["date"])
    assert [(row["date"], row["users"]) for row in rows] == [(D25, 2), (D26, 5)]
    similar = pa.table({"user_id": ["a"], "rank": pa.array([1], pa.int32()), "neighbour_id": ["b"], "distance": [0.5]})
    lake.replace("similar_users", similar, day=D25, metric="l1", info=info)
    lake.replace("similar_users", similar, day=D25, metric="design", info=info)
    lake.replace("similar_users", similar, day=D25, metric="l1", info=info)
    assert sorted(lake.read("similar_users").column("metric").to_pylist()) == ["design", "l1"]


def test_scan_pushes_filters_and_projections_down(lake):
    found = lake.scan("images", days=[D25], columns=["source_key", "wave"], equal={"user_id": "u2"})
    assert found.to_pylist() == [{"source_key": "k2", "wave": "morning"}]
    found = lake.scan("images", columns=["source_key"], filter=pl.col("source_key").is_in(["k1", "k3"]))
    assert sorted(found.column("source_key").to_pylist()) == ["k1", "k3"]


def test_lookups_follow_every_commit(lake):
    first = lake.lookup("images", "user_id", "u1", columns=["source_key", "date"])
    assert sorted(first.column("source_key").to_pylist()) == ["k1", "k3"]
    lake.delete("images", {"source_key": ["k1"]}, info=CommitInfo("delete"))
    assert lake.lookup("images", "user_id", "u1", columns=["source_key"]).column("source_key").to_pylist() == ["k3"]
    append_images(lake, D27, "morning", [image_record("k6", "u1"), image_record("k7", "u2")])
    keys = lake.lookup("images", "user_id", "u2", columns=["source_key"]).column("source_key").to_pylist()
    assert sorted(keys) == ["k2", "k7"]
    one = lake.lookup("images", "user_id", "u2", filter=pl.col("image_id") == image_record("k7").image_id)
    assert ImageRecord.from_arrow(one) == [image_record("k7", "u2")]


def test_strings_read_back_as_string_after_merge_and_delete(lake):
    """delta-rs #4579: files that MERGE and delete write hold ``string_view`` columns, which pyarrow
    cannot filter; the lake reads them with Polars and answers the table's plain string schema."""
    lake.delete("images", {"source_key": ["k2"]}, info=CommitInfo("delete"))  # rewrites k1's file
    path = next(f for f in lake.files("images") if "2026-11-25" in f)
    if isinstance(lake.store, LocalBlobStore):
        assert pq.read_schema(f"{lake.uri('images')}/{path}").field("user_id").type == pa.string_view()
    found = lake.scan("images", equal={"user_id": "u1"})
    assert found.schema == table_schema("images")
    assert sorted(found.column("source_key").to_pylist()) == ["k1", "k3"]
    assert lake.scan("images", filter=pl.col("source_key").is_in(["k3"])).num_rows == 1


def test_reading_a_table_as_of_a_version_or_a_time(local_lake):
    before = local_lake.version("images")
    between = datetime.now(UTC)
    local_lake.delete("images", {"source_key": ["k1", "k2", "k3"]}, info=CommitInfo("delete"))
    assert local_lake.read("images").num_rows == 0
    assert local_lake.scan("images", as_of=before).num_rows == 3
    assert local_lake.scan("images", as_of=between).num_rows == 3
    with pytest.raises(NotFound, match="no version 99"):
        local_lake.scan("images", as_of=99)


def test_maintenance_compacts_z_orders_checkpoints_and_vacuums(local_lake, tmp_path):
    for k in range(6):
        append_images(local_lake, D25, f"w{k}", [image_record(f"m{k}", f"user{k}")])
    files_before = len(local_lake.files("images"))
    local_lake.delete("images", {"source_key": ["m0"]}, info=CommitInfo("delete"))
    done = {m.table: m for m in local_lake.maintain(days=None, retention_hours=0, info=CommitInfo("maintenance"))}
    assert done["images"].files_before >= files_before - 1 and done["images"].files_after == 2  # one per day
    assert done["images"].files_vacuumed > 0
    on_disk = {p.name for p in (tmp_path / "lake" / "images").glob("date=*/*.parquet")}
    assert on_disk == {Path(f).name for f in local_lake.files("images")}  # the removed files are gone
    assert list((tmp_path / "lake" / "images" / "_delta_log").glob("*.checkpoint.parquet"))
    assert sorted(local_lake.read("images").column("source_key").to_pylist()) == [
        "k1",
        "k2",
        "k3",
        *(f"m{k}" for k in range(1, 6)),
    ]
    assert local_lake.history("images", 1)[0].operation == "VACUUM END"


def test_a_vacuumed_version_gives_a_clear_error(local_lake):
    first = local_lake.version("images")
    local_lake.delete("images", {"source_key": ["k1"]}, info=CommitInfo("delete"))
    local_lake.maintain(days=None, retention_hours=0, info=CommitInfo("maintenance"))
    with pytest.raises(NotFound, match="vacuumed"):
        local_lake.scan("images", as_of=first)


def test_a_hive_parquet_lake_of_the_old_layout_is_converted_in_place(tmp_path):
    """What graywave wrote before Delta Lake: <table>/date=D/wave=W/part-*.parquet (the partition
    columns in the path only), a generation token and a writer lock."""
    root = tmp_path / "lake"
    for day, wave, records in (
        (D25, "morning", [image_record("k1", "u1"), image_record("k2", "u2")]),
        (D26, "evening", []),
    ):
        folder = root / "images" / f"date={day}" / f"wave={wave}"
        folder.mkdir(parents=True)
        pq.write_table(ImageRecord.to_arrow(records or [image_record("k3", "u1")]), folder / "part-0.parquet")
    folder = root / "daily_median" / f"date={D25}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"users": [2], "histogram": [[0.5, 0.5]]}), folder / "data.parquet")
    (root / "_generation").write_text("abc")
    lake = Lake(LocalBlobStore(root))
    assert lake.migrate() == ["images", "daily_median"]
    assert not (root / "_generation").exists()
    images = lake.read("images")
    assert sorted(images.column("source_key").to_pylist()) == ["k1", "k2", "k3"]
    assert {(r["source_key"], r["date"], r["wave"]) for r in images.to_pylist()} >= {("k3", D26, "evening")}
    assert (
        append_images(lake, D26, "evening", [image_record("k3", "u1"), image_record("k9", "u1")]) == 1
    )  # it takes new commits
    assert lake.read("daily_median").to_pylist() == [{"users": 2, "histogram": [0.5, 0.5], "date": D25}]
    assert lake.migrate() == []  # converted already


def test_the_schema_has_plain_types_and_the_lake_columns():
    assert table_schema("images").field("date").type == pa.date32()
    assert table_schema("images").field("wave").type == pa.string()
    assert table_schema("similar_users").names[-2:] == ["metric", "date"]


def test_thirty_cli_queries_back_to_back_never_abort_at_exit(local_lake, tmp_path):
    """delta-rs #2184 / polars #24169: a short-lived process that read through delta-rs's Python file
    handler could abort at exit ("terminate called without an active exception", exit 134). The lake
    reads with Polars over the files delta-rs lists: 30 ``graywave query`` commands all exit 0."""
    env = os.environ | {"GRAYWAVE_LAKE_URL": local_lake.url, "GRAYWAVE_BLOB_URL": str(tmp_path / "blobs")}
    for k in range(30):
        command = (
            ["query", "median", "--date", "2026-11-25", "--json"] if k % 2 else ["rejects", "--date", "2026-11-25"]
        )
        done = subprocess.run([GRAYWAVE, *command], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.returncode, done.stderr)
        assert "terminate called" not in done.stderr


def test_history_metadata_is_json_in_the_delta_log(local_lake, tmp_path):
    log = sorted((tmp_path / "lake" / "images" / "_delta_log").glob("*.json"))[-1]
    info = next(json.loads(line)["commitInfo"] for line in log.read_text().splitlines() if "commitInfo" in line)
    assert info["graywave.wave"] == "evening" and info["graywave.day"] == "2026-11-26"


OLD_LAKE = Path(__file__).parents[1] / "data" / "parquet-lake"
"""A lake that graywave wrote before Delta Lake (commit 820b405's ``Lake.append`` and ``Lake.replace``,
under its writer lock): hive partitions, ``_generation``, ``_locks/``."""


@pytest.fixture
def old_lake(tmp_path) -> Path:
    shutil.copytree(OLD_LAKE, tmp_path / "lake")
    return tmp_path / "lake"


def test_a_lake_written_by_the_code_before_delta_is_converted_in_place(old_lake):
    before = {p.relative_to(old_lake) for p in old_lake.rglob("*.parquet")}
    lake = Lake(LocalBlobStore(old_lake))
    assert lake.migrate() == list(TABLES)
    assert before <= {p.relative_to(old_lake) for p in old_lake.rglob("*.parquet")}  # nothing rewritten
    assert not (old_lake / "_generation").exists() and not (old_lake / "_locks" / "writer.lock").exists()
    images = lake.read("images")
    assert sorted((r["source_key"].rsplit("/", 1)[1], r["date"], r["wave"]) for r in images.to_pylist()) == [
        ("a.jpg", date(2026, 11, 24), "morning"),
        ("b.jpg", date(2026, 11, 24), "morning"),
        ("c.jpg", date(2026, 11, 25), "evening"),
    ]
    assert [c.graywave.get("operation") for c in lake.history("images")] == ["migrate"]
    assert lake.lookup("images", "user_id", "alice").num_rows == 2
    assert lake.read("rejects").column("reason").to_pylist() == ["corrupt"]
    assert lake.scan("similar_users", equal={"metric": "design"}).num_rows == 2
    assert lake.read("daily_median").column("users").to_pylist() == [2]
    # The converted tables take new commits, exactly once, and maintenance.
    again = [
        image_record("uploads/2026-11-25/alice/c.jpg", "alice"),
        image_record("uploads/2026-11-25/dan/d.jpg", "dan"),
    ]
    assert append_images(lake, date(2026, 11, 25), "evening", again) == 1
    info = CommitInfo("analytics", date(2026, 11, 24))
    lake.replace("daily_median", pa.table({"users": [3], "histogram": [[1.0]]}), day=date(2026, 11, 24), info=info)
    assert lake.read("daily_median").column("users").to_pylist() == [3]
    lake.maintain(days=None, retention_hours=0, info=CommitInfo("maintenance"))
    assert lake.read("images").num_rows == 4
    assert lake.migrate() == []  # converted already


def test_graywave_lake_migrate_converts_it(old_lake, monkeypatch):
    from typer.testing import CliRunner

    from graywave.cli.main import app

    monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(old_lake))
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(old_lake.parent / "blobs"))
    done = CliRunner().invoke(app, ["lake", "migrate"])
    assert done.exit_code == 0, done.output
    assert "converted to Delta tables: images, rejects" in done.output
    median = CliRunner().invoke(app, ["query", "median", "--date", "2026-11-24", "--json"])
    assert median.exit_code == 0, median.output


def test_opening_a_table_reads_a_checkpoint_not_every_commit(tmp_path):
    """delta-rs writes a checkpoint every 100 commits (a wave's flushes, the API's uploads), so a new
    reader replays at most the commits after it."""
    lake = Lake(LocalBlobStore(tmp_path / "lake"))
    for k in range(101):
        append_images(lake, D25, "api", [image_record(f"c{k}", f"user{k % 3}")])
    log = tmp_path / "lake" / "images" / "_delta_log"
    checkpoint = json.loads((log / "_last_checkpoint").read_text())["version"]
    assert checkpoint == 99 and (log / f"{checkpoint:020d}.checkpoint.parquet").exists()  # the 100th version
    fresh = Lake(LocalBlobStore(tmp_path / "lake"))
    assert fresh.scan("images", days=[D25], columns=["source_key"]).num_rows == 101


# --- selective reads: lookups read only the row groups that can hold the value -----------------------


def by_key(rows: pa.Table) -> list[dict]:
    return sorted(pl.from_arrow(rows).to_dicts(), key=lambda row: row["source_key"])


def reference(lake: Lake, table: str, user: str) -> list[dict]:
    """What Polars' own Delta reader finds for ``user``: every file read whole, no footer kept."""
    found = pl.read_delta(lake.uri(table), storage_options=lake.storage_options() or None)
    found = found.filter(pl.col("user_id") == user).select(table_schema(table).names)
    return by_key(found.to_arrow())


@pytest.fixture
def row_groups_of_4(monkeypatch):
    """Files written in row groups of 4 rows, so that a few rows make several row groups."""
    import graywave.storage.lake as lake_module

    monkeypatch.setattr(lake_module, "ROW_GROUP", 4)


def many(lake: Lake) -> Lake:
    """Three days of images in row groups of 4: ``u1`` has 9 more images in one flush's file of 25
    (so in at least 3 of its row groups), none more on D26, one on D27; ``u3`` only on D26."""
    first = [image_record(f"u1-{k}", "u1") for k in range(9)]
    first += [image_record(f"u0-{k}", "u0") for k in range(8)] + [image_record(f"u2-{k}", "u2") for k in range(8)]
    append_images(lake, D25, "morning", first)
    append_images(
        lake, D26, "morning", [image_record(f"u3-{k}", "u3") for k in range(6)] + [image_record("u2-x", "u2")]
    )
    append_images(
        lake, D27, "evening", [image_record("u1-late", "u1"), *(image_record(f"u4-{k}", "u4") for k in range(7))]
    )
    append_rejects(lake, D26, "morning", [reject_record(f"r{k}", f"u{k % 3}") for k in range(9)])
    return lake


def test_a_lookup_finds_exactly_what_polars_finds_reading_every_file(lake, row_groups_of_4):
    many(lake)
    if isinstance(lake.store, LocalBlobStore):  # the premise: u1's rows lie in several row groups of one file
        most = 0
        for path in lake.files("images"):
            parquet = pq.ParquetFile(f"{lake.uri('images')}/{path}")
            groups = [parquet.read_row_group(g, ["user_id"])[0].to_pylist() for g in range(parquet.num_row_groups)]
            most = max(most, sum("u1" in users for users in groups))
        assert most >= 3
    for user in ("u1", "u2", "u3", "u4", "nobody"):
        found = lake.lookup("images", "user_id", user)
        assert found.schema == table_schema("images")
        assert by_key(found) == reference(lake, "images", user), user
        assert by_key(lake.lookup("rejects", "user_id", user)) == reference(lake, "rejects", user), user
    assert len(lake.lookup("images", "user_id", "u1")) == 12  # k1, k3 (``filled``), 9 of D25, 1 of D27
    assert len(lake._footers) == len(lake.files("images")) + len(lake.files("rejects"))  # the row-group path
    one = image_record("u1-4", "u1").image_id
    found = lake.lookup("images", "user_id", "u1", filter=pl.col("image_id") == one)
    assert found.column("source_key").to_pylist() == ["u1-4"]
    found = lake.lookup("images", "user_id", "u1", columns=["source_key", "date"], filter=pl.col("date") == D27)
    assert found.to_pylist() == [{"source_key": "u1-late", "date": D27}]


def test_a_get_reads_the_one_row_group_that_holds_the_image(local_lake, row_groups_of_4, monkeypatch):
    """The image id in the GET's filter picks the row group, by the membership filters of the
    image ids: no other row group of the user's is read."""
    many(local_lake)
    read: list[tuple[str, list[int]]] = []
    original = Lake._matching_rows

    def recording(self, candidate, groups, *args, **kwargs):
        read.append((Path(candidate.path).parent.name, list(groups)))
        return original(self, candidate, groups, *args, **kwargs)

    monkeypatch.setattr(Lake, "_matching_rows", recording)
    found = local_lake.lookup("images", "user_id", "u1", filter=pl.col("image_id") == image_record("u1-7").image_id)
    assert found.column("source_key").to_pylist() == ["u1-7"]
    assert len(read) == 1 and read[0][0] == "date=2026-11-25" and len(read[0][1]) == 1
    read.clear()
    assert local_lake.lookup("images", "user_id", "u3").num_rows == 6
    assert {folder for folder, _ in read} == {"date=2026-11-26"}  # the other days' files: not read


def test_lookups_after_deletes_and_upserts_read_the_rewritten_files(lake, row_groups_of_4):
    """delta-rs's delete and MERGE rewrite files with ``string_view`` columns (delta-rs #4579)."""
    many(lake)
    assert lake.lookup("images", "user_id", "u1").num_rows == 12
    lake.delete("images", {"source_key": ["u1-3", "u1-late", "u2-x"]}, info=CommitInfo("delete"))
    rewritten = replace_image(image_record("u2-0", "u2"), width=7)
    lake.upsert("images", rewritten, wave="api", days=[D25], info=CommitInfo("reprocess"))
    for user in ("u1", "u2", "u3"):
        assert by_key(lake.lookup("images", "user_id", user)) == reference(lake, "images", user), user
    assert lake.lookup("images", "user_id", "u1").num_rows == 10
    u2 = {row["source_key"]: row for row in lake.lookup("images", "user_id", "u2").to_pylist()}
    assert u2["u2-0"]["width"] == 7 and u2["u2-0"]["wave"] == "api" and "u2-x" not in u2


def replace_image(record: ImageRecord, **changes: object) -> pa.Table:
    from dataclasses import replace

    rows = ImageRecord.to_arrow([replace(record, **changes)])
    return rows.append_column("date", pa.array([D25], pa.date32()))


def test_a_lookup_reads_older_files_without_a_column_the_table_gained(tmp_path):
    """An older file lacks a column that the table has now: its rows read it as null (as Polars'
    ``missing_columns="insert"``)."""
    from deltalake import DeltaTable, write_deltalake

    lake = Lake(LocalBlobStore(tmp_path / "lake"))
    schema = table_schema("rejects")
    older = pa.schema([field for field in schema if field.name != "source_bytes"])
    DeltaTable.create(lake.uri("rejects"), schema=older, partition_by=["date"])
    rows = lake._rows("rejects", RejectRecord.to_arrow([reject_record("old", "u1")]), wave="morning", date=D25)
    write_deltalake(lake.uri("rejects"), rows.drop_columns(["source_bytes"]), mode="append")
    rows = lake._rows("rejects", RejectRecord.to_arrow([reject_record("new", "u1")]), wave="morning", date=D26)
    write_deltalake(lake.uri("rejects"), rows, mode="append", schema_mode="merge")
    found = by_key(lake.lookup("rejects", "user_id", "u1"))
    assert [(row["source_key"], row["source_bytes"]) for row in found] == [("new", 3), ("old", None)]
    assert found == reference(lake, "rejects", "u1")
    assert lake.lookup("rejects", "user_id", "u1", columns=["source_bytes"]).num_rows == 2


def test_a_data_file_gone_from_under_the_lake_is_unavailable_as_before(local_lake, tmp_path):
    """A file of the latest version that is not there (removed by hand) is ``BackendUnavailable``
    whether its footer is kept or not; a version whose files were vacuumed is ``NotFound``."""
    assert local_lake.lookup("images", "user_id", "u1").num_rows == 2  # footers kept
    path = next(f for f in local_lake.files("images") if "2026-11-26" in f)
    (tmp_path / "lake" / "images" / path).unlink()
    with pytest.raises(BackendUnavailable, match="could not be read"):
        local_lake.lookup("images", "user_id", "u1", columns=["source_key"])
    with pytest.raises(BackendUnavailable, match="could not be read"):
        Lake(LocalBlobStore(tmp_path / "lake")).lookup("images", "user_id", "u1")
    with pytest.raises(BackendUnavailable, match="could not be read"):
        local_lake.scan("images", days=[D26])  # Polars' read of whole files says the same


def test_a_lookup_as_of_a_vacuumed_version_says_so(local_lake):
    first = local_lake.version("images")
    assert local_lake.scan("images", equal={"user_id": "u1"}, as_of=first).num_rows == 2
    local_lake.delete("images", {"source_key": ["k1"]}, info=CommitInfo("delete"))
    local_lake.maintain(days=None, retention_hours=0, info=CommitInfo("maintenance"))
    with pytest.raises(NotFound, match="vacuumed"):
        local_lake.scan("images", equal={"user_id": "u1"}, as_of=first)
    assert local_lake.lookup("images", "user_id", "u1").column("source_key").to_pylist() == ["k3"]


def test_footers_are_read_once_per_file_and_kept(local_lake, row_groups_of_4, monkeypatch):
    import graywave.storage.lake as lake_module

    many(local_lake)
    opened: list[int] = []
    original = lake_module.read_footer

    def counting(source):
        opened.append(1)
        return original(source)

    monkeypatch.setattr(lake_module, "read_footer", counting)
    fresh = Lake(LocalBlobStore(local_lake.store.root))
    assert fresh.lookup("images", "user_id", "u1").num_rows == 12
    assert len(opened) == len(fresh.files("images"))
    assert fresh.lookup("images", "user_id", "u2").num_rows == 10  # another user: not the results cache
    assert fresh.lookup("images", "user_id", "u1", filter=pl.col("image_id") == image_record("u1-2").image_id)
    assert len(opened) == len(fresh.files("images"))  # no footer read again
    append_images(fresh, D27, "evening", [image_record("u1-new", "u1")])  # a new file: its footer only
    assert fresh.lookup("images", "user_id", "u1").num_rows == 13
    assert len(opened) == len(fresh.files("images"))


def test_the_footer_cache_keeps_its_budget_least_recently_used_out():
    from graywave.storage.lake import FooterCache

    class Sized:
        def __init__(self, memory: int):
            self.memory = memory

    cache = FooterCache(100)
    for name in "abc":
        cache.put(name, Sized(40))  # type: ignore[arg-type]
    assert cache.get("a") is None and cache.get("b") is not None and cache.memory == 80
    cache.put("d", Sized(40))  # type: ignore[arg-type]
    assert cache.get("c") is None and cache.get("b") is not None and len(cache) == 2


def test_a_file_rewritten_under_its_kept_footer_is_read_afresh(local_lake, row_groups_of_4):
    """Delta never rewrites a file (its name carries a UUID), but if a file changes under a kept
    footer the read notices (its size) and reads it whole."""
    many(local_lake)
    assert local_lake.lookup("images", "user_id", "u3").num_rows == 6
    day = [local_lake.store.root / "images" / f for f in local_lake.files("images") if "2026-11-26" in f]
    path = max(day, key=lambda file: file.stat().st_size)  # u3's file, not k3's
    assert "u3-0" in pq.read_table(path).column("source_key").to_pylist()
    pq.write_table(pq.read_table(path), path, row_group_size=2, compression="none")
    found = local_lake.lookup("images", "user_id", "u3", columns=["source_key"])
    assert sorted(found.column("source_key").to_pylist()) == [f"u3-{k}" for k in range(6)]


def test_a_lake_in_a_folder_whose_name_needs_escaping(tmp_path):
    """delta-rs names the files by URL (``my%20lake``); both kinds of read open them."""
    lake = filled(Lake(LocalBlobStore(tmp_path / "my lake")))
    assert lake.lookup("images", "user_id", "u1").num_rows == 2
    assert lake.read("images").num_rows == 3


def test_lookups_prepared_ahead_open_no_footer(local_lake, monkeypatch):
    """``prepare_lookups`` (the API's start-up) reads the footers and builds the filters, so that a
    lookup afterwards reads no footer and reads no whole column to learn it."""
    import graywave.storage.lake as lake_module

    filled(local_lake)
    assert local_lake.prepare_lookups("images", ["user_id", "image_id"]) == len(local_lake.files("images"))
    monkeypatch.setattr(lake_module, "read_footer", lambda *a: pytest.fail("a footer read again"))
    monkeypatch.setattr(type(local_lake), "_learn", lambda *a: pytest.fail("a column read to learn it"))
    assert sorted(local_lake.lookup("images", "user_id", "u1").column("source_key").to_pylist()) == ["k1", "k3"]
    assert local_lake.prepare_lookups("daily_median", ["date"]) == 0  # no table yet


def test_deltalake_commits_two_concurrent_compactions_of_the_same_files(tmp_path):
    """An upstream hazard, documented in docs/operations.md ("Never run two maintenances at once"):
    two compactions that read the same version both commit, and the rows of the files they both
    compacted are then in the table twice (deltalake 1.6's conflict checker lets removals with
    dataChange=false pass). This test fails once an upgrade makes the second commit fail; then
    concurrent maintenance (and compaction by the API) can be reconsidered."""
    from deltalake import DeltaTable, write_deltalake

    for k in range(4):
        write_deltalake(str(tmp_path / "t"), pa.table({"k": [k], "d": ["x"]}), mode="append", partition_by=["d"])
    first, second = DeltaTable(str(tmp_path / "t")), DeltaTable(str(tmp_path / "t"))
    first.optimize.compact()
    second.optimize.compact()  # read the same version as the first: should lose the race, does not
    rows = pl.read_delta(str(tmp_path / "t"))["k"].sort().to_list()
    assert rows == [0, 0, 1, 1, 2, 2, 3, 3]
