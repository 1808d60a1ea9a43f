"""What the API changes: store an upload, process uploads now, delete images everywhere.

Processing and deleting hold the lake's writer lock, like a wave: while a wave runs they raise
``Busy`` (the API answers 409) rather than race with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any

from graywave.backends import Backends
from graywave.config import Settings
from graywave.flows.batch import Upload, process_uploads
from graywave.kernels import select_device
from graywave.kernels.codecs import identify
from graywave.storage.blobs import BlobInfo
from graywave.storage.lake import LakeBusy
from graywave.storage.layout import parse_upload_key, upload_key

API_WAVE = "api"
"""The wave name under which the API records what it processes."""
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "AVIF": "avif"}


class Busy(RuntimeError):
    """A wave holds the lake."""


@contextmanager
def _holding_lake(backends: Backends, settings: Settings) -> Iterator[None]:
    try:
        with backends.lake.exclusive(settings.lock_ttl_s):
            yield
    except LakeBusy as busy:
        raise Busy(str(busy)) from None


def store_upload(backends: Backends, settings: Settings, user_id: str, data: bytes, content_type: str) -> str:
    """Check that ``data`` is an accepted image (header only) and store it as a new upload of today.

    Returns its key; raises ``Rejected`` for what a wave would reject from the header.
    """
    fmt = identify(data, settings.max_pixels)
    key = upload_key(settings.today(), user_id, f"{uuid.uuid4().hex}.{EXTENSIONS[fmt]}")
    backends.blobs.write(key, data, content_type)
    return key


def replace_upload(backends: Backends, settings: Settings, source_key: str, data: bytes, content_type: str) -> None:
    identify(data, settings.max_pixels)
    backends.blobs.write(source_key, data, content_type)


def _blob_info(backends: Backends, key: str) -> BlobInfo:
    for blob in backends.blobs.list(key):
        if blob.key == key:
            return blob
    raise KeyError(key)


def process_now(backends: Backends, settings: Settings, source_keys: Sequence[str]) -> None:
    """Process these uploads at once (again, if they were handled): their old records are replaced."""
    with _holding_lake(backends, settings):
        backends.forget(set(source_keys))
        uploads = [Upload(parse_upload_key(key), _blob_info(backends, key)) for key in source_keys]
        result = process_uploads(uploads, backends.blobs, settings, select_device(settings.device))
        backends.record(settings.today(), API_WAVE, result.images, result.rejects)


def delete_images(backends: Backends, settings: Settings, documents: Sequence[dict[str, Any]]) -> None:
    """Remove images everywhere: originals, processed images, lake rows, MongoDB documents, and the
    owners' analytics rows of the days those images counted in (rerun the analytics to recompute)."""
    with _holding_lake(backends, settings):
        for doc in documents:
            backends.blobs.delete(doc["source_key"])
            if doc.get("processed_key"):
                backends.blobs.delete(doc["processed_key"])
        backends.forget({doc["source_key"] for doc in documents})
        users = {doc["user_id"] for doc in documents if doc.get("user_id")}
        days = {date.fromisoformat(doc["date"]) for doc in documents if doc.get("date")}
        if users and days:
            backends.lake.remove_rows("daily_user_histograms", ["user_id"], users, days)
            backends.lake.remove_rows("similar_users", ["user_id", "neighbour_id"], users, days)
            if backends.catalog is not None:
                backends.catalog.delete_results(users, {day.isoformat() for day in days})
