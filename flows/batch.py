"""One batch of uploads, processed without Prefect: read, decode to luma, histogram, write.

This is the hot path. A batch decodes on one thread (the wave runs one batch per worker). On a
remote store (S3) a few I/O threads read the next uploads and write the processed images, so that
latency hides behind the compute; at most ``io_threads`` uploads are read ahead and at most as many
processed images wait to be written. On local disk the I/O runs inline, one upload at a time. Every upload ends as exactly one image row or one reject row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

from graywave.config import Settings
from graywave.kernels import Device, histogram
from graywave.kernels.codecs import Rejected, RejectReason, decode_luma, encode_luma_jpeg, upright
from graywave.storage.blobs import BlobInfo, BlobNotFound, BlobStore
from graywave.storage.layout import PROCESSED_CONTENT_TYPE, UploadKey


T = TypeVar("T")


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


def process_bytes(upload: Upload, data: bytes, settings: Settings, device: Device) -> tuple[dict[str, Any], bytes]:
    """Decode, histogram and encode one upload: its image row and the processed JPEG.

    Raises ``Rejected`` for bad input.
    """
    key = upload.key
    image = decode_luma(data, settings.max_pixels)
    counts = device.get(histogram(device.put(image.plane), settings.bins))
    encoded = encode_luma_jpeg(upright(image), settings.jpeg_quality)
    row = {
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
    return row, encoded


class _InlineExecutor(Executor):
    """Runs each call at once: local disk I/O gains nothing from threads, and would pay for them."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def _prefetched(io: Executor, store: BlobStore, uploads: Sequence[Upload], depth: int) -> Iterator[tuple[Upload, Future[bytes]]]:
    """Each upload with its read in flight, at most ``depth`` reads ahead of the caller."""
    queue = iter(uploads)
    ahead = deque((upload, io.submit(store.read, upload.key.key)) for upload in islice(queue, depth))
    while ahead:
        following = next(queue, None)
        if following is not None:
            ahead.append((following, io.submit(store.read, following.key.key)))
        yield ahead.popleft()


def process_uploads(uploads: Sequence[Upload], store: BlobStore, settings: Settings, device: Device) -> BatchResult:
    """Process a batch on this thread, with blob reads and writes overlapped on ``settings.io_threads``.

    An image row is returned only once its processed JPEG is stored; a failed write fails the batch.
    """
    result = BatchResult()
    writes: deque[Future[None]] = deque()
    depth = settings.io_threads if store.remote else 1
    io = ThreadPoolExecutor(depth, thread_name_prefix="graywave-io") if store.remote else _InlineExecutor()
    with io:
        for upload, read in _prefetched(io, store, uploads, depth):
            try:
                try:
                    data = read.result()
                except BlobNotFound:
                    raise Rejected(RejectReason.VANISHED, "the upload was listed but is gone from the blob store") from None
                row, encoded = process_bytes(upload, data, settings, device)
                del data
            except Rejected as rejected:
                result.rejects.append(
                    reject_row(upload.key.key, upload.key.user_id, upload.blob, rejected.reason, rejected.detail)
                )
                continue
            writes.append(io.submit(store.write, upload.key.processed_key, encoded, PROCESSED_CONTENT_TYPE))
            result.images.append(row)
            result.pixels += row["pixel_count"]
            while len(writes) > depth:  # bound the encoded images waiting to be written
                writes.popleft().result()
        for write in writes:
            write.result()
    return result
