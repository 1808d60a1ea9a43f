"""The backends that the settings name, opened once: blob store, Parquet lake and, when configured, MongoDB.

with Backends.open(Settings()) as backends:
    backends.blobs.read("uploads/2026-11-25/alice/IMG_0001.jpg")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import TYPE_CHECKING

from graywave.config import Settings
from graywave.records import ImageRecord, RejectRecord, handling_days
from graywave.storage.blobs import BlobStore, open_blob_store
from graywave.storage.lake import Lake
from graywave.storage.layout import parse_upload_key

if TYPE_CHECKING:
    from graywave.storage.mongo import MongoCatalog


@dataclass(frozen=True)
class Backends:
    blobs: BlobStore
    lake: Lake
    catalog: MongoCatalog | None

    @classmethod
    def open(cls, settings: Settings) -> Backends:
        catalog = None
        if settings.mongodb_uri is not None:
            from graywave.storage.mongo import MongoCatalog  # pymongo: a quarter second, for MongoDB only

            catalog = MongoCatalog(
                settings.mongodb_uri.get_secret_value(), settings.mongodb_database, settings.backend_retry_s
            )
        return cls(
            blobs=open_blob_store(settings.blob_url, settings.s3_endpoint_url),
            lake=Lake(open_blob_store(settings.lake_url, settings.s3_endpoint_url)),
            catalog=catalog,
        )

    def record(self, day: date, wave: str, images: Sequence[ImageRecord], rejects: Sequence[RejectRecord]) -> list[str]:
        """Record handled uploads: in MongoDB first (when configured), then in the lake; return the
        lake files written.

        The lake is the one source of truth for what is handled, so it is written last: a crash in
        between leaves upserted documents that a rerun upserts again, unchanged in number.
        """
        if self.catalog is not None:
            url_for = self.blobs.url_for
            self.catalog.upsert([record.to_document(day, wave, url_for) for record in (*images, *rejects)])
        written = [
            self.lake.append("images", ImageRecord.to_arrow(images), day=day, wave=wave),
            self.lake.append("rejects", RejectRecord.to_arrow(rejects), day=day, wave=wave),
        ]
        return [key for key in written if key is not None]

    def rerecord(
        self,
        wave: str,
        images: Sequence[ImageRecord],
        rejects: Sequence[RejectRecord],
        *,
        days: Mapping[str, date] | None = None,
    ) -> None:
        """Record new rows for uploads that may have been handled before, then remove their older rows.

        Each upload's new row goes to ``days[source_key]`` (the partition of its old row, whose day's
        analytics it counts in) when that is a day a wave can handle the upload on, else to the
        partition of the upload's own day. Every wave that can list the upload looks at those
        partitions, so no rerun of a past wave handles it again. The old rows go
        only once the new ones are written: a crash in between leaves two rows of an upload, never
        none. MongoDB's documents are replaced in place (the same ``_id``).
        """
        days = days or {}

        def day_of(source_key: str) -> date:
            uploaded = parse_upload_key(source_key).upload_date
            before = days.get(source_key)
            return before if before in handling_days(uploaded) else uploaded

        by_day: dict[date, tuple[list[ImageRecord], list[RejectRecord]]] = {}
        for image in images:
            by_day.setdefault(day_of(image.source_key), ([], []))[0].append(image)
        for reject in rejects:
            by_day.setdefault(day_of(reject.source_key), ([], []))[1].append(reject)
        written = [key for day, (i, r) in sorted(by_day.items()) for key in self.record(day, wave, i, r)]
        source_keys = {image.source_key for image in images} | {reject.source_key for reject in rejects}
        for table in ("images", "rejects"):
            self.lake.remove_rows(table, ["source_key"], source_keys, keep=written)

    def forget(self, source_keys: set[str]) -> None:
        """Remove every record of these uploads: lake rows and MongoDB documents (not the blobs)."""
        for table in ("images", "rejects"):
            self.lake.remove_rows(table, ["source_key"], source_keys)
        if self.catalog is not None:
            self.catalog.delete_sources(source_keys)

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()

    def __enter__(self) -> Backends:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
