"""MongoDB as the serving copy of the image records (and the daily analytics), through pymongo.

One collection, ``images``, one document per upload, keyed by its ``image_id`` (``_id``): the design
document's fields (``user_id``, ``file_name``, ``image_url``, ``timestamp``, ``histogram``) and what
the API needs (status, sizes, keys, the wave). Rejected uploads are documents too, with
``status: "rejected"`` and the reason. Writes are unordered bulk upserts by ``_id``: replaying them
changes nothing, so a rerun never duplicates. The documents are made by the records
(``graywave.records.ImageRecord.to_document``); this module only stores and finds them.

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

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ASCENDING, MongoClient, ReplaceOne
from pymongo.errors import ConnectionFailure, PyMongoError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from graywave.errors import BackendUnavailable
from graywave.records import ImageRecord, RejectRecord, record_from_document
from graywave.storage.catalog import Recorded

if TYPE_CHECKING:
    import polars as pl

COLLECTION = "images"
UPLOAD_ORDER = [("timestamp", ASCENDING), ("_id", ASCENDING)]
"""A user's images oldest upload first (served by the ``user_time`` index), then by id."""


def _transient(error: BaseException) -> bool:
    return isinstance(error, ConnectionFailure) or (
        isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError")
    )


class MongoCatalog:
    """The ``images`` collection of a MongoDB database (and the daily analytics' collections), as the
    catalog (``graywave.storage.catalog.Catalog``). ``url_for`` makes a document's URLs (``image_url``,
    ``processed_url``) of the blob store's keys."""

    def __init__(self, uri: str, database: str, *, url_for: Callable[[str], str], retry_s: float = 60.0):
        self.client: MongoClient[dict[str, Any]] = MongoClient(
            uri, tz_aware=True, appname="graywave", serverSelectionTimeoutMS=5000, retryWrites=True
        )
        self.images = self.client[database][COLLECTION]
        self.url_for = url_for
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

    def find(self, query: Mapping[str, Any], skip: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        """The ``images`` documents that match ``query``, oldest upload first."""
        return list(self.images.find(dict(query)).sort(UPLOAD_ORDER).skip(skip).limit(limit))

    def count(self, query: Mapping[str, Any]) -> int:
        return self.images.count_documents(dict(query))

    def handled(self, source_keys: Collection[str], days: Collection[date] = ()) -> set[str]:
        """Which of these uploads have a document (processed or rejected); an upload's document is
        found by its key, whatever its day."""
        keys = sorted(source_keys)
        if not keys:
            return set()
        return {doc["source_key"] for doc in self.images.find({"source_key": {"$in": keys}}, {"source_key": 1})}

    def page(self, user_id: str | None, offset: int = 0, limit: int = 0) -> tuple[list[Recorded], int]:
        query = {} if user_id is None else {"user_id": user_id}
        return self._recorded(query, offset, limit), self.count(query)

    def image(self, user_id: str, image_id: str) -> Recorded | None:
        found = self._recorded({"user_id": user_id, "_id": image_id})
        return found[0] if found else None

    def _recorded(self, query: Mapping[str, Any], skip: int = 0, limit: int = 0) -> list[Recorded]:
        return [
            Recorded(record_from_document(doc), date.fromisoformat(doc["date"]), doc["wave"])
            for doc in self.find(query, skip, limit)
        ]

    def prepare(self) -> None:
        """The indexes (``ensure_indexes``)."""
        self.ensure_indexes()

    def warm_up(self) -> None:
        """Nothing: the client connects on its first query."""

    def readiness_checks(self, timeout_s: float) -> Mapping[str, Callable[[], object]]:
        return {"mongodb": lambda: self.ping(timeout_s)}

    def record(self, records: Iterable[tuple[ImageRecord | RejectRecord, date]], wave: str) -> None:
        """Upsert each record's document (``ImageRecord.to_document``) by its ``_id``."""
        self.upsert([record.to_document(day, wave, self.url_for) for record, day in records])

    def forget(self, source_keys: Collection[str]) -> None:
        """Delete the documents of these uploads."""
        keys = sorted(source_keys)
        self._retrying(f"{len(keys)} deletions", lambda: self.images.delete_many({"source_key": {"$in": keys}}))

    def record_analytics(
        self, day: date, daily: pl.DataFrame, median: dict[str, Any] | None, similar: pl.DataFrame, metric: str
    ) -> None:
        """Upsert a document per user (``daily_user_histograms``: ``<day>/<user>``), one for the median
        (``daily_median``: ``<day>``) and one per user's neighbours (``similar_users``:
        ``<day>/<metric>/<user>``, the neighbours as a list)."""
        import polars as pl

        iso = day.isoformat()
        self.upsert(
            ({"_id": f"{iso}/{row['user_id']}", "date": iso, **row} for row in daily.to_dicts()),
            collection="daily_user_histograms",
        )
        if median is not None:
            self.upsert([{"_id": iso, "date": iso, **median}], collection="daily_median")
        neighbours = similar.group_by("user_id", maintain_order=True).agg(
            pl.struct(pl.col("rank"), pl.col("neighbour_id").alias("user_id"), pl.col("distance")).alias("neighbours")
        )
        self.upsert(
            (
                {"_id": f"{iso}/{metric}/{row['user_id']}", "date": iso, "metric": metric, **row}
                for row in neighbours.to_dicts()
            ),
            collection="similar_users",
        )

    def forget_analytics(self, users: Collection[str], day: date) -> None:
        """Delete these users' analytics documents of ``day`` (as users and as neighbours)."""
        database, users_, days_ = self.images.database, sorted(users), [day.isoformat()]
        selector = {"user_id": {"$in": users_}, "date": {"$in": days_}}

        def delete() -> None:
            database["daily_user_histograms"].delete_many(selector)
            database["similar_users"].delete_many(selector)
            database["similar_users"].update_many(
                {"date": {"$in": days_}}, {"$pull": {"neighbours": {"user_id": {"$in": users_}}}}
            )

        self._retrying("deletions of analytics", delete)

    def ping(self, timeout_s: float = 2.0) -> None:
        """Raise ``BackendUnavailable`` unless MongoDB answers a ping within ``timeout_s`` (server
        selection included), without retrying: a readiness check, not a write that must land."""
        try:
            with pymongo.timeout(timeout_s):
                self.client.admin.command("ping")
        except PyMongoError as error:
            raise BackendUnavailable(
                f"MongoDB did not answer a ping in {timeout_s:g} s: {type(error).__name__}"
            ) from error

    def close(self) -> None:
        self.client.close()
