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
    def __init__(self, backends: Backends, today: date):
        self.backends = backends
        self.today = today

    def _handled(self, user_id: str | None) -> list[dict[str, Any]]:
        catalog = self.backends.catalog
        if catalog is not None:
            query = {} if user_id is None else {"user_id": user_id}
            return list(catalog.images.find(query))
        lake, url_for = self.backends.lake, self.backends.blobs.url_for
        documents = [
            image_document(row, row["date"], row["wave"], url_for) for row in lake.read("images").to_pylist()
        ] + [reject_document(row, row["date"], row["wave"], url_for) for row in lake.read("rejects").to_pylist()]
        return [doc for doc in documents if user_id is None or doc["user_id"] == user_id]

    def _recent_uploads(self, user_id: str | None) -> list[BlobInfo]:
        """Uploads that a wave could still pick up: today's and yesterday's."""
        blobs = []
        for day in (self.today - timedelta(days=1), self.today):
            prefix = uploads_prefix(day) + (f"{user_id}/" if user_id else "")
            blobs += self.backends.blobs.list(prefix)
        return blobs

    def _pending(self, user_id: str | None, handled_keys: set[str]) -> list[dict[str, Any]]:
        url_for = self.backends.blobs.url_for
        documents = []
        for blob in self._recent_uploads(user_id):
            if blob.key in handled_keys:
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

    def documents(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every image (of one user, or of all), oldest upload first."""
        handled = self._handled(user_id)
        pending = self._pending(user_id, {doc["source_key"] for doc in handled})
        return sorted(handled + pending, key=lambda doc: (doc["timestamp"] is None, doc["timestamp"], doc["_id"]))

    def get(self, user_id: str, image_id: str) -> dict[str, Any] | None:
        for doc in self.documents(user_id):
            if doc["_id"] == image_id:
                return doc
        return None
