"""One batch of uploads, processed without Prefect: read, decode to luma, histogram, write.

This is the hot path. Each upload is handled on its own (read, decoded, written and released)
so a batch never holds more than one photo in memory; a batch runs on one thread, and the wave
runs one batch per worker. Every upload ends as exactly one image row or one reject row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graywave.config import Settings
from graywave.kernels import Device, histogram
from graywave.kernels.codecs import Rejected, RejectReason, decode_luma, encode_luma_jpeg, upright
from graywave.storage.blobs import BlobInfo, BlobNotFound, BlobStore
from graywave.storage.layout import PROCESSED_CONTENT_TYPE, UploadKey


@dataclass(frozen=True)
class Upload:
    """A pending upload, as listed: where it is and when it was stored."""

    key: UploadKey
    blob: BlobInfo


@dataclass
class BatchResult:
    """What a batch hands back to the wave: rows for the lake (small), and pixels for throughput."""

    images: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    pixels: int = 0


def reject_row(source_key: str, user_id: str | None, blob: BlobInfo | None, reason: RejectReason, detail: str) -> dict[str, Any]:
    return {
        "source_key": source_key,
        "user_id": user_id,
        "reason": str(reason),
        "detail": detail,
        "uploaded_at": blob.modified if blob else None,
        "seen_at": datetime.now(UTC),
        "source_bytes": blob.size if blob else None,
    }


def process_upload(upload: Upload, store: BlobStore, settings: Settings, device: Device) -> dict[str, Any]:
    """Process one upload into an image row; raise ``Rejected`` for bad input."""
    key = upload.key
    try:
        data = store.read(key.key)
    except BlobNotFound:
        raise Rejected(RejectReason.VANISHED, "the upload was listed but is gone from the blob store") from None
    image = decode_luma(data, settings.max_pixels)
    del data
    counts = device.get(histogram(device.put(image.plane), settings.bins))
    encoded = encode_luma_jpeg(upright(image), settings.jpeg_quality)
    store.write(key.processed_key, encoded, PROCESSED_CONTENT_TYPE)
    return {
        "image_id": key.image_id,
        "user_id": key.user_id,
        "upload_date": key.upload_date,
        "file_name": key.file_name,
        "source_key": key.key,
        "processed_key": key.processed_key,
        "uploaded_at": upload.blob.modified,
        "processed_at": datetime.now(UTC),
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "pixel_count": image.plane.size,
        "source_bytes": upload.blob.size,
        "processed_bytes": len(encoded),
        "histogram": counts.tolist(),
    }


def process_uploads(uploads: Sequence[Upload], store: BlobStore, settings: Settings, device: Device) -> BatchResult:
    result = BatchResult()
    for upload in uploads:
        try:
            row = process_upload(upload, store, settings, device)
        except Rejected as rejected:
            result.rejects.append(
                reject_row(upload.key.key, upload.key.user_id, upload.blob, rejected.reason, rejected.detail)
            )
        else:
            result.images.append(row)
            result.pixels += row["pixel_count"]
    return result
