"""What the API knows about images: handled uploads (MongoDB when configured, else the lake) and
pending ones (uploads of today and yesterday that no wave has handled yet).

Every image is a document of the same shape as the MongoDB ``images`` collection
(``storage.mongo``), with ``status`` one of ``pending``, ``processed``, ``rejected``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from graywave.backends import Backends
from graywave.storage.blobs import BlobInfo
from graywave.storage.layout import BadKey, image_id_for, parse_upload_key, uploads_prefix
from graywave.storage.mongo import image_document, reject_document


class ImageCatalog:
    def __init__(self, backends: Backends):
        self.backends = backends
        self._lake_files: tuple[str, ...] | None = None
        self._lake_documents: list[dict[str, Any]] = []

    def _from_lake(self) -> list[dict[str, Any]]:
        """The lake's rows as documents, read again only when its files change."""
        lake, url_for = self.backends.lake, self.backends.blobs.url_for
        files = (*lake.files("images"), *lake.files("rejects"))
        if files != self._lake_files:
            self._lake_documents = [
                image_document(row, row["date"], row["wave"], url_for) for row in lake.read("images").to_pylist()
            ] + [reject_document(row, row["date"], row["wave"], url_for) for row in lake.read("rejects").to_pylist()]
            self._lake_files = files
        return self._lake_documents

    def _handled(self, user_id: str | None, image_id: str | None = None) -> list[dict[str, Any]]:
        catalog = self.backends.catalog
        if catalog is not None:
            query = {} if user_id is None else {"user_id": user_id}
            if image_id is not None:
                query["_id"] = image_id
            return list(catalog.images.find(query))
        return [
            doc for doc in self._from_lake()
            if (user_id is None or doc["user_id"] == user_id) and (image_id is None or doc["_id"] == image_id)
        ]

    def _recent_uploads(self, user_id: str | None, today: date) -> list[BlobInfo]:
        """Uploads that a wave could still pick up: today's and yesterday's."""
        blobs = []
        for day in (today - timedelta(days=1), today):
            prefix = uploads_prefix(day) + (f"{user_id}/" if user_id else "")
            blobs += self.backends.blobs.list(prefix)
        return blobs

    def _pending(self, user_id: str | None, today: date) -> list[dict[str, Any]]:
        url_for = self.backends.blobs.url_for
        recent = self._recent_uploads(user_id, today)
        handled = {doc["source_key"] for doc in self._handled_sources({blob.key for blob in recent})}
        documents = []
        for blob in recent:
            if blob.key in handled:
                continue
            try:
                key = parse_upload_key(blob.key)
            except BadKey:
                continue  # a wave rejects it with bad_key; it belongs to no user
            documents.append(
                {
                    "_id": image_id_for(blob.key),
                    "user_id": key.user_id,
                    "file_name": key.file_name,
                    "image_url": url_for(blob.key),
                    "timestamp": blob.modified,
                    "status": "pending",
                    "upload_date": key.upload_date.isoformat(),
                    "source_key": blob.key,
                    "source_bytes": blob.size,
                }
            )
        return documents

    def _handled_sources(self, keys: set[str]) -> list[dict[str, Any]]:
        if self.backends.catalog is not None:
            return list(self.backends.catalog.images.find({"source_key": {"$in": sorted(keys)}}, {"source_key": 1}))
        return [doc for doc in self._from_lake() if doc["source_key"] in keys]

    def documents(self, today: date, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every image (of one user, or of all): the handled ones oldest upload first, then the pending."""
        return sorted(self._handled(user_id), key=_upload_order) + self._pending(user_id, today)

    def page(self, today: date, user_id: str | None, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of ``documents`` and the total, the handled part paged by MongoDB when it is there."""
        pending = self._pending(user_id, today)
        catalog = self.backends.catalog
        if catalog is not None:
            query = {} if user_id is None else {"user_id": user_id}
            handled_total = catalog.images.count_documents(query)
            cursor = catalog.images.find(query).sort([("timestamp", 1), ("_id", 1)]).skip(offset).limit(limit)
            handled = list(cursor)
        else:
            everything = sorted(self._handled(user_id), key=_upload_order)
            handled_total, handled = len(everything), everything[offset : offset + limit]
        start = max(0, offset - handled_total)
        return handled + pending[start : start + limit - len(handled)], handled_total + len(pending)

    def get(self, today: date, user_id: str, image_id: str) -> dict[str, Any] | None:
        handled = self._handled(user_id, image_id)
        if handled:
            return handled[0]
        return next((doc for doc in self._pending(user_id, today) if doc["_id"] == image_id), None)


def _upload_order(doc: dict[str, Any]) -> tuple[Any, ...]:
    """Oldest upload first; bad-key rejects (no time) first of all; then by id."""
    return (doc["timestamp"] is not None, doc["timestamp"] or 0, doc["_id"])
