"""The MongoDB catalog against a MongoDB wire-protocol server (SecantusDB, or GRAYWAVE_TEST_MONGODB_URI)."""

import os
import uuid
from datetime import UTC, date, datetime

import pymongo
import pytest

from graywave.storage.mongo import BackendUnavailable, MongoCatalog, image_document, reject_document

NOW = datetime(2026, 11, 25, 9, 58, 3, tzinfo=UTC)


def image_row(key: str, user: str = "alice") -> dict:
    return {
        "image_id": key[-20:].rjust(20, "0"), "user_id": user, "upload_date": date(2026, 11, 25),
        "file_name": key.rsplit("/", 1)[-1], "source_key": key, "processed_key": f"processed/{key[-6:]}.jpg",
        "uploaded_at": NOW, "processed_at": NOW, "width": 4, "height": 2, "format": "JPEG", "pixel_count": 8,
        "source_bytes": 100, "processed_bytes": 50, "histogram": [8] + [0] * 15,
    }


@pytest.fixture
def catalog(mongodb_uri):
    catalog = MongoCatalog(mongodb_uri, f"test_{uuid.uuid4().hex[:8]}", retry_s=15)
    yield catalog
    catalog.client.drop_database(catalog.images.database.name)
    catalog.close()


def url_for(key: str) -> str:
    return f"s3://photos/{key}"


def test_documents_follow_the_design_schema_and_upserts_never_duplicate(catalog):
    rows = [image_row("uploads/2026-11-25/alice/a.jpg"), image_row("uploads/2026-11-25/bob/b.jpg", "bob")]
    reject = {"source_key": "uploads/2026-11-25/bob/x.jpg", "user_id": "bob", "reason": "corrupt", "detail": "bad",
              "uploaded_at": NOW, "seen_at": NOW, "source_bytes": 3}
    documents = [image_document(r, date(2026, 11, 25), "morning", url_for) for r in rows]
    documents.append(reject_document(reject, date(2026, 11, 25), "morning", url_for))
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
        catalog.upsert([image_document(image_row("uploads/2026-11-25/alice/a.jpg"), date(2026, 11, 25), "m", url_for)])
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert catalog.images.count_documents({}) == 1


def test_a_mongodb_that_stays_down_fails_with_a_clear_error(unused_port):
    catalog = MongoCatalog(f"mongodb://127.0.0.1:{unused_port}/?directConnection=true", "x", retry_s=1.5)
    with pytest.raises(BackendUnavailable, match="MongoDB did not accept 1 upserts for 2 s"):
        catalog.upsert([{"_id": "a"}])


@pytest.fixture
def unused_port():
    from tests.conftest import free_port

    return free_port()
