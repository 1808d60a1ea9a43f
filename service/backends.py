"""The backends that the settings name, opened once: blob store, Delta lake and the catalog that
serves the handled uploads (MongoDB when configured, else the lake: ``graywave.storage.catalog``).

with Backends.open(Settings()) as backends:
    backends.blobs.read("uploads/2026-11-25/alice/IMG_0001.jpg")
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from types import TracebackType

import pyarrow as pa

from graywave.config import Settings
from graywave.errors import BadKey, GraywaveError, NotFound
from graywave.records import ImageRecord, RejectRecord, handling_days, wave_upload_days
from graywave.storage.blobs import BlobStore, open_blob_store
from graywave.storage.catalog import UPLOAD_TABLES, Catalog, LakeCatalog
from graywave.storage.lake import CommitInfo, Lake, Table
from graywave.storage.layout import DELETIONS, parse_upload_key

logger = logging.getLogger("graywave.backends")

DELETED_CHECKS = 16
"""Originals looked up at once on a remote store, after a commit, for uploads deleted meanwhile."""


@dataclass(frozen=True)
class Deletion:
    """What one delete removes: uploads (their originals, processed images, lake rows and MongoDB
    documents) and the analytics rows that their processed images counted in (a user on a day).

    It is written to the blob store (``deletions/<id>.json``) before anything is removed, and removed
    last (``Backends.delete``): a delete that stopped half-way (a crash, a kill -9) is finished by
    the next wave (``Backends.finish_deletions``), so no record outlives its original."""

    source_keys: tuple[str, ...]
    analytics: tuple[tuple[str, date], ...] = ()
    """(user, day) of each deleted processed image: rejects and pending uploads counted in nothing."""

    def to_json(self) -> bytes:
        return json.dumps(
            {"source_keys": list(self.source_keys), "analytics": [[u, d.isoformat()] for u, d in self.analytics]}
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Deletion:
        """``ValueError`` when ``data`` is not a deletion's JSON."""
        try:
            found = json.loads(data)
            keys = tuple(str(key) for key in found["source_keys"])
            analytics = tuple((str(user), date.fromisoformat(day)) for user, day in found["analytics"])
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a deletion: {error!r}") from None
        return cls(keys, analytics)


MAX_DELETION_BYTES = 256 * 1024 * 1024
"""The largest deletion record read back (a delete of a million uploads is about 100 MB)."""


@dataclass(frozen=True)
class Backends:
    blobs: BlobStore
    lake: Lake
    catalog: Catalog
    """Where handled uploads are read from: MongoDB when it is configured, else the lake (the one
    place that chooses). The lake is written in either case: it is the source of truth."""

    @classmethod
    def open(cls, settings: Settings) -> Backends:
        retry_s, region = settings.backend_retry_s, settings.s3_region
        blobs = open_blob_store(settings.blob_url, settings.s3_endpoint_url, retry_s=retry_s, s3_region=region)
        lake = Lake(open_blob_store(settings.lake_url, settings.s3_endpoint_url, retry_s=retry_s, s3_region=region))
        catalog: Catalog
        if settings.mongodb_uri is None:
            catalog = LakeCatalog(lake)
        else:
            from graywave.storage.mongo import MongoCatalog  # pymongo: a quarter second, for MongoDB only

            catalog = MongoCatalog(
                settings.mongodb_uri.get_secret_value(),
                settings.mongodb_database,
                url_for=blobs.url_for,
                retry_s=settings.backend_retry_s,
            )
        return cls(blobs=blobs, lake=lake, catalog=catalog)

    def record(
        self,
        day: date,
        wave: str,
        images: Sequence[ImageRecord],
        rejects: Sequence[RejectRecord],
        *,
        flow_run: str | None = None,
    ) -> int:
        """Record handled uploads: in the catalog first (MongoDB's documents, when configured), then
        in the lake; return the rows the lake did not hold yet.

        Both writes are idempotent (an upsert by id, an insert-only MERGE by source key), so a rerun,
        a retry or another process recording the same uploads at the same time leaves one record
        of each. The lake is the one source of truth for what is handled, so it is written last.
        Then a record whose original is gone is removed again (``drop_deleted``): a delete that
        raced this wave wins.
        """
        records: list[ImageRecord | RejectRecord] = [*images, *rejects]
        self.catalog.record([(record, day) for record in records], wave)
        info = CommitInfo("record", day, wave, flow_run)
        among = handling_days(wave_upload_days(day)[0], day)  # every partition that can hold these uploads
        inserted = self.lake.record("images", ImageRecord.to_arrow(images), day=day, wave=wave, among=among, info=info)
        inserted += self.lake.record(
            "rejects", RejectRecord.to_arrow(rejects), day=day, wave=wave, among=among, info=info
        )
        self.drop_deleted([*images, *rejects])
        return inserted

    def drop_deleted(self, records: Sequence[ImageRecord | RejectRecord]) -> None:
        """Remove every record (and processed image) of ``records`` whose original is gone from the
        blob store: an upload deleted while a wave processed it. Called after the records were
        committed, this makes a delete win whatever the order: a delete that removed the original
        before this look is seen here; one that came after it finds the records and removes them."""
        keys = [record.source_key for record in records if record.uploaded_at is not None]
        if not keys:
            return
        if self.blobs.remote:
            with ThreadPoolExecutor(DELETED_CHECKS, thread_name_prefix="graywave-exists") as pool:
                present = dict(zip(keys, pool.map(self.blobs.exists, keys), strict=True))
        else:
            present = {key: self.blobs.exists(key) for key in keys}
        gone = {key for key, there in present.items() if not there}
        if not gone:
            return
        self.forget(gone)
        for record in records:
            if isinstance(record, ImageRecord) and record.source_key in gone:
                self.blobs.delete(record.processed_key)

    def rerecord(
        self,
        wave: str,
        images: Sequence[ImageRecord],
        rejects: Sequence[RejectRecord],
        *,
        days: Mapping[str, date] | None = None,
        flow_run: str | None = None,
    ) -> None:
        """Record new rows for uploads that may have been handled before, in place of their old ones.

        Each upload's new row goes to ``days[source_key]`` (the partition of its old row, whose day's
        analytics it counts in) when that is a day a wave can handle the upload on, else to the
        partition of the upload's own day. Every wave that can list the upload looks at those
        partitions, so no rerun of a past wave handles it again. In each table the new rows replace
        the old ones in one MERGE commit (update where found, insert where not); an upload that
        changed tables (a processed image that is now rejected) then loses its row in the other
        one: a crash in between leaves two rows of an upload, never none. MongoDB's documents are
        replaced in place (the same ``_id``).
        """
        days = days or {}

        def day_of(source_key: str) -> date:
            uploaded = parse_upload_key(source_key).upload_date
            before = days.get(source_key)
            return before if before in handling_days(uploaded) else uploaded

        records: list[ImageRecord | RejectRecord] = [*images, *rejects]
        self.catalog.record([(record, day_of(record.source_key)) for record in records], wave)
        info = CommitInfo("reprocess", wave=wave, flow_run=flow_run)
        candidates = {
            partition
            for record in records
            for partition in handling_days(parse_upload_key(record.source_key).upload_date)
        }
        tables: tuple[tuple[Table, pa.Table, list[str]], ...] = (
            ("images", ImageRecord.to_arrow(images), [record.source_key for record in images]),
            ("rejects", RejectRecord.to_arrow(rejects), [record.source_key for record in rejects]),
        )
        for table, arrow, keys in tables:
            dated = arrow.append_column("date", pa.array([day_of(key) for key in keys], pa.date32()))
            self.lake.upsert(table, dated, wave=wave, days=candidates, info=info)
        self.lake.delete("images", {"source_key": [r.source_key for r in rejects]}, days=candidates, info=info)
        self.lake.delete("rejects", {"source_key": [i.source_key for i in images]}, days=candidates, info=info)
        self.drop_deleted([*images, *rejects])

    def delete(self, deletion: Deletion) -> None:
        """Remove what ``deletion`` names, everywhere. Its record is written first and removed last,
        so a delete that stops half-way is finished by the next wave (``finish_deletions``) or by a
        retry; every step can be done again."""
        key = f"{DELETIONS}/{uuid.uuid4().hex}.json"
        self.blobs.write(key, deletion.to_json(), "application/json")
        self._carry_out(deletion)
        self.blobs.delete(key)

    def finish_deletions(self) -> int:
        """Finish every delete that stopped half-way (its record is still in the blob store); return
        how many. A record that cannot be read as a deletion is logged and left for an operator."""
        finished = 0
        for blob in list(self.blobs.list(f"{DELETIONS}/")):
            try:
                deletion = Deletion.from_json(self.blobs.read(blob.key, max_bytes=MAX_DELETION_BYTES))
            except NotFound:  # finished meanwhile by another process
                continue
            except (ValueError, GraywaveError) as error:
                logger.error("the deletion record %s cannot be read, left as it is: %s", blob.key, error)
                continue
            self._carry_out(deletion)
            self.blobs.delete(blob.key)
            finished += 1
        return finished

    def _carry_out(self, deletion: Deletion) -> None:
        """The originals go first: a wave that is processing one of them now finds it gone once it
        has recorded it, and removes its record and processed image itself (``drop_deleted``). The
        processed image's key follows from the upload's, so it is removed even where no record
        names it yet."""
        for key in deletion.source_keys:
            self.blobs.delete(key)
            with contextlib.suppress(BadKey):  # a bad key's upload was never processed
                self.blobs.delete(parse_upload_key(key).processed_key)
        self.forget(set(deletion.source_keys))
        self._forget_analytics(deletion.analytics)

    def _forget_analytics(self, counted: Iterable[tuple[str, date]]) -> None:
        """Remove the analytics rows that deleted processed images counted in: each user's daily
        histogram of that day, and the similar-users rows that name them on that day (rerun the
        analytics to recompute them). Nothing else changes."""
        by_day: dict[date, set[str]] = {}
        for user, day in counted:
            by_day.setdefault(day, set()).add(user)
        info = CommitInfo("delete")
        for day, users in sorted(by_day.items()):
            self.lake.delete("daily_user_histograms", {"user_id": users}, days=[day], info=info)
            self.lake.delete("similar_users", {"user_id": users, "neighbour_id": users}, days=[day], info=info)
            self.catalog.forget_analytics(users, day)

    def forget(self, source_keys: set[str]) -> None:
        """Remove every record of these uploads: lake rows and the catalog's (MongoDB's documents), not the blobs."""
        info = CommitInfo("delete")
        for table in UPLOAD_TABLES:
            self.lake.delete(table, {"source_key": source_keys}, info=info)
        self.catalog.forget(source_keys)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Backends:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
