"""MongoDB as the serving copy of the image records (and the daily analytics), through pymongo.

One collection, ``images``, one document per upload, keyed by its ``image_id`` (``_id``): the design
document's fields (``user_id``, ``file_name``, ``image_url``, ``timestamp``, ``histogram``) and what
the API needs (status, sizes, keys, the wave). Rejected uploads are documents too, with
``status: "rejected"`` and the reason. Writes are unordered bulk upserts by ``_id``: replaying them
changes nothing, so a rerun never duplicates.

    {"_id": "9f2c...", "user_id": "alice", "file_name": "IMG_0001.HEIC",
     "image_url": "s3://photos/uploads/2026-11-25/alice/IMG_0001.HEIC",
     "timestamp": ISODate("2026-11-25T09:58:03Z"),  # when the upload was stored
     "histogram": [1021, 5400, ...],                 # 16 counts
     "status": "processed", "date": "2026-11-25", "wave": "morning", "upload_date": "2026-11-25",
     "processed_key": "processed/2026-11-25/alice/9f2c....jpg", "processed_url": "s3://...",
     "width": 3024, "height": 4032, "pixel_count": 12192768, "format": "HEIF",
     "source_bytes": 2310012, "processed_bytes": 1630221, "processed_at": ISODate(...)}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from pymongo import ASCENDING, MongoClient, ReplaceOne
from pymongo.errors import ConnectionFailure, PyMongoError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from graywave.storage.layout import image_id_for

COLLECTION = "images"


class BackendUnavailable(RuntimeError):
    """A backend stayed unreachable for longer than the wave is willing to wait."""


def _transient(error: BaseException) -> bool:
    return isinstance(error, ConnectionFailure) or (
        isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError")
    )


def image_document(row: dict[str, Any], day: date, wave: str, url_for: Callable[[str], str]) -> dict[str, Any]:
    return {
        "_id": row["image_id"],
        "user_id": row["user_id"],
        "file_name": row["file_name"],
        "image_url": url_for(row["source_key"]),
        "timestamp": row["uploaded_at"],
        "histogram": row["histogram"],
        "status": "processed",
        "date": day.isoformat(),
        "wave": wave,
        "upload_date": row["upload_date"].isoformat(),
        "source_key": row["source_key"],
        "processed_key": row["processed_key"],
        "processed_url": url_for(row["processed_key"]),
        "processed_at": row["processed_at"],
        "width": row["width"],
        "height": row["height"],
        "pixel_count": row["pixel_count"],
        "format": row["format"],
        "source_bytes": row["source_bytes"],
        "processed_bytes": row["processed_bytes"],
    }


def reject_document(row: dict[str, Any], day: date, wave: str, url_for: Callable[[str], str]) -> dict[str, Any]:
    key = row["source_key"]
    parts = key.split("/")
    return {
        "_id": image_id_for(key),
        "user_id": row["user_id"],
        "file_name": parts[-1],
        "image_url": url_for(key),
        "timestamp": row["uploaded_at"],
        "status": "rejected",
        "reason": row["reason"],
        "detail": row["detail"],
        "date": day.isoformat(),
        "wave": wave,
        "source_key": key,
        "source_bytes": row["source_bytes"],
        "seen_at": row["seen_at"],
    }


class MongoCatalog:
    """The ``images`` collection of a MongoDB database."""

    def __init__(self, uri: str, database: str, retry_s: float = 60.0):
        self.client: MongoClient = MongoClient(
            uri, tz_aware=True, appname="graywave", serverSelectionTimeoutMS=5000, retryWrites=True
        )
        self.images = self.client[database][COLLECTION]
        self.retry_s = retry_s

    def _retrying(self, what: str, action: Callable[[], Any]) -> Any:
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self.retry_s),
            reraise=False,
        )
        try:
            return retrying(action)
        except RetryError as error:
            last = error.last_attempt.exception()
            raise BackendUnavailable(
                f"MongoDB did not accept {what} for {self.retry_s:.0f} s: {type(last).__name__}: {last}"
            ) from last

    def ensure_indexes(self) -> None:
        """Indexes for the queries to come: a user's images by time, a day's images by status."""

        def create() -> None:
            self.images.create_index([("user_id", ASCENDING), ("timestamp", ASCENDING)], name="user_time")
            self.images.create_index([("date", ASCENDING), ("status", ASCENDING)], name="day_status")

        self._retrying("index creation", create)

    def upsert(self, documents: Iterable[dict[str, Any]], collection: str = COLLECTION) -> None:
        """Insert or replace each document by ``_id``, in one unordered bulk write (retried whole)."""
        operations = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in documents]
        target = self.images.database[collection]
        if operations:
            self._retrying(f"{len(operations)} upserts", lambda: target.bulk_write(operations, ordered=False))

    def delete_sources(self, source_keys: set[str]) -> None:
        """Delete the documents of these uploads."""
        keys = sorted(source_keys)
        self._retrying(f"{len(keys)} deletions", lambda: self.images.delete_many({"source_key": {"$in": keys}}))

    def delete_results(self, users: set[str], days: set[str]) -> None:
        """Delete these users' analytics documents of these days (as users and as neighbours)."""
        database, users_, days_ = self.images.database, sorted(users), sorted(days)
        selector = {"user_id": {"$in": users_}, "date": {"$in": days_}}

        def delete() -> None:
            database["daily_user_histograms"].delete_many(selector)
            database["similar_users"].delete_many(selector)
            database["similar_users"].update_many(
                {"date": {"$in": days_}}, {"$pull": {"neighbours": {"user_id": {"$in": users_}}}}
            )

        self._retrying("deletions of analytics", delete)

    def close(self) -> None:
        self.client.close()
