"""The catalog interface (``storage.catalog``): the lake's implementation, and the same answers from
the lake's and MongoDB's (SecantusDB) for the same records, written as ``Backends`` writes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from graywave.errors import BackendUnavailable
from graywave.records import ImageRecord, RejectRecord, image_id_for
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.catalog import Catalog, LakeCatalog
from graywave.storage.lake import TABLES, CommitInfo, Lake
from graywave.storage.mongo import MongoCatalog
from tests.helpers import DAY, image_record, reject_record

NEXT_DAY = DAY + timedelta(days=1)


def at(hour: int) -> datetime:
    return datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(hours=hour)


def record(lake: Lake, catalog: Catalog, day: date, wave: str, records: Sequence[ImageRecord | RejectRecord]) -> None:
    """As ``Backends.record`` does: the catalog first, then the lake (always written)."""
    catalog.record([(one, day) for one in records], wave)
    info = CommitInfo("record", day, wave)
    images = [one for one in records if isinstance(one, ImageRecord)]
    rejects = [one for one in records if isinstance(one, RejectRecord)]
    lake.record("images", ImageRecord.to_arrow(images), day=day, wave=wave, among=[DAY, NEXT_DAY], info=info)
    lake.record("rejects", RejectRecord.to_arrow(rejects), day=day, wave=wave, among=[DAY, NEXT_DAY], info=info)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(LocalBlobStore(tmp_path / "lake"))


@pytest.fixture(params=["lake", "mongodb"])
def catalog(request: pytest.FixtureRequest, lake: Lake) -> Iterator[Catalog]:
    if request.param == "lake":
        yield LakeCatalog(lake)
        return
    mongo = MongoCatalog(
        request.getfixturevalue("mongodb_uri"),
        f"test_{uuid.uuid4().hex[:8]}",
        url_for=lambda key: f"s3://photos/{key}",
        retry_s=15,
    )
    yield mongo
    mongo.client.drop_database(mongo.images.database.name)
    mongo.close()


ALICE_LATE = image_record(user="alice", name="late.jpg", uploaded_at=at(15))
ALICE_EARLY = image_record(user="alice", name="early.jpg", uploaded_at=at(8))
ALICE_CUT = RejectRecord(
    source_key=f"uploads/{DAY}/alice/cut.jpg",
    user_id="alice",
    reason="corrupt",
    detail="truncated",
    uploaded_at=at(12),
    seen_at=at(13),
    source_bytes=3,
)
BOB = image_record(user="bob", name="b.jpg", uploaded_at=at(10))
BAD_KEY = reject_record("uploads/not-a-day/x.jpg", reason="bad_key")


def recorded(catalog: Catalog, lake: Lake) -> None:
    record(lake, catalog, DAY, "morning", [ALICE_LATE, BOB, BAD_KEY])
    record(lake, catalog, NEXT_DAY, "evening", [ALICE_EARLY, ALICE_CUT])


def test_pages_are_oldest_upload_first_with_bad_keys_first_and_the_total(catalog, lake):
    recorded(catalog, lake)
    found, total = catalog.page(None)
    assert total == 5
    assert [one.record.source_key for one in found] == [
        BAD_KEY.source_key,
        ALICE_EARLY.source_key,
        BOB.source_key,
        ALICE_CUT.source_key,
        ALICE_LATE.source_key,
    ]
    page, total = catalog.page("alice", offset=1, limit=1)
    assert total == 3 and [one.record.source_key for one in page] == [ALICE_CUT.source_key]
    rest, _ = catalog.page("alice", offset=1)
    assert [one.record.source_key for one in rest] == [ALICE_CUT.source_key, ALICE_LATE.source_key]
    assert catalog.page("carol") == ([], 0)


def test_an_image_is_found_with_its_day_and_wave_and_only_for_its_user(catalog, lake):
    recorded(catalog, lake)
    early = catalog.image("alice", ALICE_EARLY.image_id)
    assert early is not None and (early.record, early.day, early.wave) == (ALICE_EARLY, NEXT_DAY, "evening")
    cut = catalog.image("alice", image_id_for(ALICE_CUT.source_key))
    assert cut is not None and cut.record.status == "rejected" and (cut.day, cut.wave) == (NEXT_DAY, "evening")
    assert catalog.image("bob", ALICE_EARLY.image_id) is None
    assert catalog.image("alice", "0" * 20) is None


def test_handled_names_the_recorded_uploads_among_the_keys_asked(catalog, lake):
    recorded(catalog, lake)
    unknown = f"uploads/{DAY}/alice/new.jpg"
    asked = {ALICE_LATE.source_key, ALICE_CUT.source_key, BOB.source_key, unknown}
    assert catalog.handled(asked, [DAY]) == asked - {unknown}
    assert catalog.handled(set(), [DAY]) == set()


def test_recording_again_changes_nothing(catalog, lake):
    recorded(catalog, lake)
    recorded(catalog, lake)  # a rerun of both waves
    assert catalog.page(None)[1] == 5


def test_the_lake_catalog_writes_nothing_since_the_lake_is_written_by_the_backends(lake):
    """Its writes are no-ops: one more write would write each row twice."""
    catalog = LakeCatalog(lake)
    catalog.prepare()
    catalog.record([(ALICE_LATE, DAY)], "morning")
    daily = pl.DataFrame({"user_id": ["alice"], "images": [1]})
    similar = pl.DataFrame({"user_id": ["alice"], "neighbour_id": ["bob"], "rank": [1], "distance": [0.5]})
    catalog.record_analytics(DAY, daily, {"users": 1, "histogram": [1.0]}, similar, "l1")
    assert lake.versions() == (-1,) * len(TABLES)  # not one table made
    record(lake, catalog, DAY, "morning", [ALICE_LATE])
    catalog.forget({ALICE_LATE.source_key})
    catalog.forget_analytics({"alice"}, DAY)
    assert catalog.image("alice", ALICE_LATE.image_id) is not None  # Backends.forget deletes the lake's rows


def test_the_lake_catalog_warms_up_on_a_fresh_lake_and_refuses_an_unreachable_one(tmp_path):
    LakeCatalog(Lake(LocalBlobStore(tmp_path / "fresh"))).warm_up()  # nothing written yet: empty, ready
    with pytest.raises(BackendUnavailable):
        LakeCatalog(Lake(LocalBlobStore(tmp_path / "not-mounted" / "lake"))).warm_up()


def test_only_mongodb_adds_a_readiness_check(catalog):
    checks = catalog.readiness_checks(5.0)
    if isinstance(catalog, MongoCatalog):
        assert list(checks) == ["mongodb"]
        checks["mongodb"]()  # answers: no exception
    else:
        assert checks == {}


def test_mongodb_mirrors_the_analytics_and_forgets_them(lake, mongodb_uri):
    mongo = MongoCatalog(mongodb_uri, f"test_{uuid.uuid4().hex[:8]}", url_for=str, retry_s=15)
    try:
        daily = pl.DataFrame({"user_id": ["alice", "bob"], "images": [1, 2]})
        similar = pl.DataFrame(
            {"user_id": ["alice", "bob"], "neighbour_id": ["bob", "alice"], "rank": [1, 1], "distance": [0.5, 0.5]}
        )
        mongo.record_analytics(DAY, daily, {"users": 2, "histogram": [1.0]}, similar, "l1")
        database = mongo.images.database
        assert database["daily_user_histograms"].count_documents({"date": DAY.isoformat()}) == 2
        assert database["daily_median"].find_one({"_id": DAY.isoformat()})["users"] == 2  # type: ignore[index]
        alice = database["similar_users"].find_one({"_id": f"{DAY}/l1/alice"})
        assert alice is not None and alice["neighbours"] == [{"rank": 1, "user_id": "bob", "distance": 0.5}]
        mongo.forget_analytics({"bob"}, DAY)
        assert [doc["user_id"] for doc in database["daily_user_histograms"].find()] == ["alice"]
        assert database["similar_users"].find_one({"_id": f"{DAY}/l1/alice"})["neighbours"] == []  # type: ignore[index]
    finally:
        mongo.client.drop_database(mongo.images.database.name)
        mongo.close()
