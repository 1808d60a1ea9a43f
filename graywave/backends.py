"""The backends that the settings name, opened once: blob store, Parquet lake and, when configured, MongoDB.

    with Backends.open(Settings()) as backends:
        backends.blobs.read("uploads/2026-11-25/alice/IMG_0001.jpg")
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from graywave.config import Settings
from graywave.storage.blobs import BlobStore, open_blob_store
from graywave.storage.lake import Lake
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
            catalog = MongoCatalog(
                settings.mongodb_uri.get_secret_value(), settings.mongodb_database, settings.backend_retry_s
            )
        return cls(
            blobs=open_blob_store(settings.blob_url, settings.s3_endpoint_url),
            lake=Lake(open_blob_store(settings.lake_url, settings.s3_endpoint_url)),
            catalog=catalog,
        )

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()

    def __enter__(self) -> Backends:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
