"""The MongoDB catalog against a MongoDB wire-protocol server (SecantusDB, or GRAYWAVE_TEST_MONGODB_URI)."""

import os
import uuid
from datetime import UTC, date, datetime

import pymongo
import pytest

from graywave.errors import BackendUnavailable
from graywave.records import RejectRecord, record_from_document
from graywave.storage.mongo import MongoCatalog
from tests.helpers import image_record

NOW = datetime(2026, 11, 25, 9, 58, 3, tzinfo=UTC)


@pytest.fixture
def catalog(mongodb_uri):
    catalog = MongoCatalog(mongodb_uri, f"test_{uuid.uuid4().hex[:8]}", url_for=url_for, retry_s=15)
    yield catalog
    catalog.client.drop_database(catalog.images.database.name)
    catalog.close()


def url_for(key: str) -> str:
    return f"s3://photos/{key}"


def test_documents_follow_the_design_schema_and_upserts_never_duplicate(catalog):
    rows = [
        image_record("uploads/2026-11-25/alice/a.jpg", uploaded_at=NOW),
        image_record("uploads/2026-11-25/bob/b.jpg", "bob", uploaded_at=NOW),
    ]
    reject = RejectRecord(
        source_key="uploads/2026-11-25/bob/x.jpg",
        user_id="bob",
        reason="corrupt",
        detail="bad",
        uploaded_at=NOW,
        seen_at=NOW,
        source_bytes=3,
    )
    documents = [record.to_document(date(2026, 11, 25), "morning", url_for) for record in (*rows, reject)]
    catalog.upsert(documents)
    catalog.upsert(documents)  # a rerun
    assert catalog.images.count_documents({}) == 3
    alice = catalog.images.find_one({"user_id": "alice"})
    assert {"_id", "user_id", "file_name", "image_url", "timestamp", "histogram"} <= alice.keys()
    assert alice["image_url"] == "s3://photos/uploads/2026-11-25/alice/a.jpg"
    assert alice["timestamp"] == NOW
    assert (alice["status"], alice["date"], alice["wave"]) == ("processed", "2026-11-25", "morning")
    rejected = catalog.images.find_one({"status": "rejected"})
    assert (rejected["reason"], rejected["user_id"], rejected["file_name"]) == ("corrupt", "bob", "x.jpg")
    # and back: each document describes the record it was made from, field for field
    assert {record_from_document(doc) for doc in catalog.find({})} == {*rows, reject}


def test_indexes_serve_user_time_and_day_queries(catalog):
    catalog.ensure_indexes()
    catalog.ensure_indexes()  # idempotent
    keys = {name: info["key"] for name, info in catalog.images.index_information().items()}
    assert keys["user_time"] == [("user_id", 1), ("timestamp", 1)]
    assert keys["day_status"] == [("date", 1), ("status", 1)]


@pytest.mark.skipif(bool(os.environ.get("GRAYWAVE_TEST_MONGODB_URI")), reason="failpoints need --enable-test-commands")
def test_transient_write_errors_are_retried(catalog, mongodb_uri):
    admin = pymongo.MongoClient(mongodb_uri).admin
    admin.command(
        {
            "configureFailPoint": "failCommand",
            # pymongo retries a retryable write once by itself: five failures need graywave's retries too.
            "mode": {"times": 5},
            "data": {"failCommands": ["update"], "errorCode": 6, "errorLabels": ["RetryableWriteError"]},
        }
    )
    try:
        catalog.upsert(
            [
                image_record("uploads/2026-11-25/alice/a.jpg", uploaded_at=NOW).to_document(
                    date(2026, 11, 25), "m", url_for
                )
            ]
        )
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert catalog.images.count_documents({}) == 1


def test_a_mongodb_that_stays_down_fails_with_a_clear_error(unused_port):
    catalog = MongoCatalog(
        f"mongodb://127.0.0.1:{unused_port}/?directConnection=true", "x", url_for=url_for, retry_s=1.5
    )
    with pytest.raises(BackendUnavailable, match="MongoDB did not accept 1 upserts for 2 s"):
        catalog.upsert([{"_id": "a"}])


@pytest.fixture
def unused_port():
    from tests.helpers import free_port

    return free_port()
