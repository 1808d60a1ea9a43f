"""One batch of uploads, processed without Prefect: read, decode to luma, histogram, write.

This is the hot path, one pipeline for every device: the device's batch codec
(``kernels.codecs.luma_batch_codec``: the CPU's, or nvImageCodec's on a GPU, twins with one
interface) says how many uploads it takes at once, and decodes and encodes them. A batch runs on one
thread (the wave runs one batch per worker). On a remote store (S3), or when the codec takes many
uploads at once, a few I/O threads read the next uploads and write the processed images, so that
latency hides behind the compute; at most ``io_threads`` uploads are read ahead and at most as many
processed images wait to be written. Otherwise (the CPU on local disk) the I/O runs inline, one
upload at a time. Every upload ends as exactly one image record or one reject record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, ClassVar, Literal, TypeVar, cast

from graywave.config import Settings
from graywave.errors import BlobNotFound, CodecFailed, Rejected, RejectReason
from graywave.kernels import Device, histogram_batch
from graywave.kernels.codecs import (
    DecodedImage,
    LumaBatchCodec,
    decode_luma,
    encode_luma_jpeg,
    luma_batch_codec,
    upright,
)
from graywave.records import ImageRecord, RejectRecord
from graywave.service.scheduling import bounded
from graywave.storage.blobs import BlobInfo, BlobStore
from graywave.storage.layout import PROCESSED_CONTENT_TYPE, UploadKey

T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    """A pending upload, as listed: where it is and when it was stored."""

    key: UploadKey
    blob: BlobInfo

    status: ClassVar[Literal["pending"]] = "pending"

    # What an upload shares with the records it becomes (``service.images.ImageEntry`` reads these).
    @property
    def image_id(self) -> str:
        return self.key.image_id

    @property
    def source_key(self) -> str:
        return self.key.key

    @property
    def user_id(self) -> str:
        return self.key.user_id

    @property
    def file_name(self) -> str:
        return self.key.file_name

    @property
    def uploaded_at(self) -> datetime:
        return self.blob.modified

    @property
    def source_bytes(self) -> int:
        return self.blob.size


@dataclass(frozen=True)
class Fallback:
    """An upload that the device's batch codec did not decode or encode, and the CPU codecs did."""

    source_key: str
    stage: Literal["decode", "encode"]
    reason: str

    def __post_init__(self) -> None:  # one short line: it goes into log lines and markdown tables
        object.__setattr__(self, "reason", " ".join(self.reason.split()).replace("|", "/")[:200])

    def label(self) -> str:
        return f"{self.stage}: {self.reason}"


@dataclass
class BatchResult:
    """What a batch hands back to the wave: rows for the lake (small), pixels for throughput, and
    the uploads that fell back from the device's codec to the CPU's (counted, never silent)."""

    images: list[ImageRecord] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)
    pixels: int = 0
    fallbacks: list[Fallback] = field(default_factory=list)

    def reject(self, upload: Upload, rejected: Rejected) -> None:
        self.rejects.append(
            reject_record(upload.key.key, upload.key.user_id, upload.blob, rejected.reason, rejected.detail)
        )


def reject_record(
    source_key: str, user_id: str | None, blob: BlobInfo | None, reason: RejectReason, detail: str
) -> RejectRecord:
    return RejectRecord(
        source_key=source_key,
        user_id=user_id,
        reason=str(reason),
        detail=detail,
        uploaded_at=blob.modified if blob else None,
        seen_at=datetime.now(UTC),
        source_bytes=blob.size if blob else None,
    )


def _vanished() -> Rejected:
    return Rejected(RejectReason.VANISHED, "the upload was listed but is gone from the blob store")


def _image_record(upload: Upload, image: DecodedImage, counts: Sequence[int], processed_bytes: int) -> ImageRecord:
    key = upload.key
    return ImageRecord(
        image_id=key.image_id,
        user_id=key.user_id,
        upload_date=key.upload_date,
        file_name=key.file_name,
        source_key=key.key,
        processed_key=key.processed_key,
        uploaded_at=upload.blob.modified,
        processed_at=datetime.now(UTC),
        width=image.width,
        height=image.height,
        format=image.format,
        pixel_count=int(image.plane.size),
        source_bytes=upload.blob.size,
        processed_bytes=processed_bytes,
        histogram=tuple(int(count) for count in counts),
    )


class _InlineExecutor(Executor):
    """Runs each call at once: local disk I/O gains nothing from threads, and would pay for them."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _read(read: Future[bytes]) -> bytes | Rejected:
    """An upload's bytes, or why they cannot be had (vanished, too large, not a file)."""
    try:
        return read.result()
    except BlobNotFound:
        return _vanished()
    except Rejected as rejected:
        return rejected


def process_uploads(
    uploads: Sequence[Upload],
    store: BlobStore,
    settings: Settings,
    device: Device,
    codec: LumaBatchCodec | None = None,
) -> BatchResult:
    """Process a batch on ``device`` with its batch codec (``luma_batch_codec``, or ``codec``).

    The uploads go through in chunks of the codec's ``batch_size``: one at a time on the CPU, so that
    the batch streams through memory; the whole batch at once on a GPU, where the plain JPEGs are
    decoded together, every plane's histogram comes from one kernel launch and the processed images
    are encoded together. What the codec leaves (other containers, an image it gives no plane for, a
    call that fails) goes through the CPU codecs and is counted in ``BatchResult.fallbacks`` with the
    reason. Blob reads and writes run on ``settings.io_threads`` threads where the store is remote or
    the chunks are larger than one upload, else inline: at most that many reads ahead, and as many
    processed images waiting to be written (``scheduling.bounded``).

    An image row is returned only once its processed JPEG is stored; a failed write fails the batch.
    """
    if codec is None:
        codec = luma_batch_codec(device)
    result = BatchResult()
    threaded = store.remote or codec.batch_size != 1
    depth = settings.io_threads if threaded else 1
    io = ThreadPoolExecutor(depth, thread_name_prefix="graywave-io") if threaded else _InlineExecutor()
    with io:

        def read(upload: Upload) -> tuple[Upload, Future[bytes]]:
            return upload, io.submit(store.read, upload.key.key, settings.max_upload_bytes)

        def write(processed: tuple[str, bytes]) -> Future[None]:
            return io.submit(store.write, *processed, PROCESSED_CONTENT_TYPE)

        chunks = _chunks(bounded(read, uploads, depth), codec.batch_size or max(len(uploads), 1))
        for written in bounded(write, _processed(chunks, settings, device, codec, result), depth):
            written.result()
    return result


def _processed(
    chunks: Iterator[list[tuple[Upload, Future[bytes]]]],
    settings: Settings,
    device: Device,
    codec: LumaBatchCodec,
    result: BatchResult,
) -> Iterator[tuple[str, bytes]]:
    """Each processed image to write (its key and JPEG), a chunk of uploads at a time; its row goes to
    ``result`` (returned once every write is done), and so do the rejects and fallbacks."""
    for chunk in chunks:
        images = _decoded(chunk, settings, device, codec, result)
        counts = device.get(histogram_batch([image.plane for _, image in images], settings.bins))
        outputs = _encoded(images, settings, device, codec, result)
        for (upload, image), count, output in zip(images, counts, outputs, strict=True):
            result.images.append(_image_record(upload, image, count.tolist(), len(output)))
            result.pixels += int(image.plane.size)
            yield upload.key.processed_key, output


def _decoded(
    chunk: list[tuple[Upload, Future[bytes]]],
    settings: Settings,
    device: Device,
    codec: LumaBatchCodec,
    result: BatchResult,
) -> list[tuple[Upload, DecodedImage]]:
    """The images of a chunk's uploads, in order: decoded by ``codec``; what it left, on the CPU, counted
    as a fallback (or a reject, when the CPU rejects it: not a fallback). The others go to ``result``'s
    rejects."""
    datas = [_read(read) for _, read in chunk]
    readable = [data for data in datas if not isinstance(data, Rejected)]
    limits = {"max_pixels": settings.max_pixels, "max_decode_bytes": settings.max_decode_bytes}
    by_codec = iter(codec.decode_images(readable, **limits) if readable else [])
    images: list[tuple[Upload, DecodedImage]] = []
    for (upload, _), data in zip(chunk, datas, strict=True):
        decoded = data if isinstance(data, Rejected) else next(by_codec)
        try:
            if isinstance(decoded, Rejected):
                raise decoded
            if isinstance(decoded, str):  # left to the CPU, with the reason
                on_cpu = decode_luma(cast(bytes, data), **limits)
                result.fallbacks.append(Fallback(upload.key.key, "decode", decoded))
                decoded = DecodedImage(device.put(on_cpu.plane), on_cpu.format, on_cpu.orientation)
        except Rejected as rejected:
            result.reject(upload, rejected)
            continue
        images.append((upload, decoded))
    return images


def _encoded(
    images: list[tuple[Upload, DecodedImage]],
    settings: Settings,
    device: Device,
    codec: LumaBatchCodec,
    result: BatchResult,
) -> list[bytes]:
    """The processed JPEG of each image (its upright plane), encoded together by ``codec``; what it did
    not encode on the CPU, counted as a fallback. A call that fails as a whole fails every image."""
    if not images:
        return []
    shown = [upright(image) for _, image in images]
    try:
        encoded, why = codec.encode(shown, settings.jpeg_quality), f"{codec.name} could not encode it"
    except CodecFailed as error:
        encoded, why = [None] * len(shown), str(error)
    outputs: list[bytes] = []
    for (upload, _), plane, output in zip(images, shown, encoded, strict=True):
        if output is None:
            result.fallbacks.append(Fallback(upload.key.key, "encode", why))
            output = encode_luma_jpeg(device.get(plane), settings.jpeg_quality)
        outputs.append(output)
    return outputs
