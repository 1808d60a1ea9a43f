"""One batch of uploads, processed without Prefect: read, decode to luma, histogram, write.

This is the hot path. A batch decodes on one thread (the wave runs one batch per worker). On a
remote store (S3) a few I/O threads read the next uploads and write the processed images, so that
latency hides behind the compute; at most ``io_threads`` uploads are read ahead and at most as many
processed images wait to be written. On local disk the I/O runs inline, one upload at a time.
Every upload ends as exactly one image record or one reject record.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from graywave.config import Settings
from graywave.errors import BlobNotFound, CodecFailed, Rejected, RejectReason
from graywave.kernels import Device, histogram, histogram_batch
from graywave.kernels.codecs import DecodedImage, Header, decode_luma, encode_luma_jpeg, read_header, upright
from graywave.records import ImageRecord, RejectRecord
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


def process_bytes(upload: Upload, data: bytes, settings: Settings, device: Device) -> tuple[ImageRecord, bytes]:
    """Decode, histogram and encode one upload: its image record and the processed JPEG.

    Raises ``Rejected`` for bad input.
    """
    image = decode_luma(data, settings.max_pixels, max_decode_bytes=settings.max_decode_bytes)
    counts = device.get(histogram(device.put(image.plane), settings.bins))
    encoded = encode_luma_jpeg(upright(image), settings.jpeg_quality)
    return _image_record(upload, image, counts.tolist(), len(encoded)), encoded


class _InlineExecutor(Executor):
    """Runs each call at once: local disk I/O gains nothing from threads, and would pay for them."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def _prefetched(
    io: Executor, store: BlobStore, uploads: Sequence[Upload], depth: int, settings: Settings
) -> Iterator[tuple[Upload, Future[bytes]]]:
    """Each upload with its read in flight, at most ``depth`` reads ahead of the caller."""
    queue = iter(uploads)
    limit = settings.max_upload_bytes
    ahead = deque((upload, io.submit(store.read, upload.key.key, limit)) for upload in islice(queue, depth))
    while ahead:
        following = next(queue, None)
        if following is not None:
            ahead.append((following, io.submit(store.read, following.key.key, limit)))
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
        for upload, read in _prefetched(io, store, uploads, depth, settings):
            try:
                try:
                    data = read.result()
                except BlobNotFound:
                    raise _vanished() from None
                row, encoded = process_bytes(upload, data, settings, device)
                del data
            except Rejected as rejected:
                result.reject(upload, rejected)
                continue
            writes.append(io.submit(store.write, upload.key.processed_key, encoded, PROCESSED_CONTENT_TYPE))
            result.images.append(row)
            result.pixels += row.pixel_count
            while len(writes) > depth:  # bound the encoded images waiting to be written
                writes.popleft().result()
        for write in writes:
            write.result()
    return result


class LumaBatchCodec(Protocol):
    """Decodes plain JPEGs to luma planes and encodes planes to grayscale JPEGs, a batch at a time,
    on a device (``kernels.gpu_codecs.NvImageCodecLuma``). ``None`` marks an image it could not do;
    ``CodecFailed`` a call that failed as a whole."""

    @property
    def name(self) -> str: ...

    def decode(self, datas: Sequence[bytes]) -> list[Any | None]: ...

    def encode(self, planes: Sequence[Any], quality: int) -> list[bytes | None]: ...


def _read_all(store: BlobStore, uploads: Sequence[Upload], settings: Settings) -> list[bytes | Rejected]:
    """Every upload's bytes, or why it cannot be read (vanished, too large, not a file), read concurrently."""

    def read(upload: Upload) -> bytes | Rejected:
        try:
            return store.read(upload.key.key, settings.max_upload_bytes)
        except BlobNotFound:
            return _vanished()
        except Rejected as rejected:
            return rejected

    with ThreadPoolExecutor(settings.io_threads, thread_name_prefix="graywave-io") as io:
        return list(io.map(read, uploads))


def _by_codec(
    codec: LumaBatchCodec, stage: str, call: Callable[[list[T]], list[Any]], items: list[T]
) -> tuple[list[Any], str]:
    """``call(items)``: the codec's results (``None`` where it gave none), and why those are missing;
    a call that fails as a whole gives ``None`` for every item, with its message."""
    if not items:
        return [], ""
    try:
        return call(items), f"{codec.name} could not {stage} it"
    except CodecFailed as error:
        return [None] * len(items), str(error)


def process_uploads_batched(
    uploads: Sequence[Upload], store: BlobStore, settings: Settings, device: Device, codec: LumaBatchCodec
) -> BatchResult:
    """The batch path of a GPU: the plain JPEGs decoded together by ``codec``, every plane's histogram
    in one kernel launch, the processed images encoded together. What the codec cannot decode (other
    containers, an image it gives no plane for, a call that fails) or encode goes through the CPU
    codecs, one image at a time, and is counted in ``BatchResult.fallbacks`` with the reason. The
    whole batch is held in memory.
    """
    result = BatchResult()
    headers, present = _headers(uploads, _read_all(store, uploads, settings), settings, result)
    images = _decoded(uploads, headers, present, settings, device, codec, result)
    order = sorted(images)
    counts = device.get(histogram_batch([images[i].plane for i in order], settings.bins))
    outputs = _encoded(uploads, [(i, upright(images[i])) for i in order], settings, device, codec, result)
    with ThreadPoolExecutor(settings.io_threads, thread_name_prefix="graywave-io") as io:
        list(
            io.map(
                lambda k: store.write(uploads[order[k]].key.processed_key, outputs[k], PROCESSED_CONTENT_TYPE),
                range(len(order)),
            )
        )
    for k, i in enumerate(order):
        result.images.append(_image_record(uploads[i], images[i], counts[k].tolist(), len(outputs[k])))
        result.pixels += images[i].plane.size
    return result


def _headers(
    uploads: Sequence[Upload], datas: list[bytes | Rejected], settings: Settings, result: BatchResult
) -> tuple[dict[int, Header], dict[int, bytes]]:
    """The header of each upload (by its index) that was read and is an image within the limits, and
    its bytes; the others go to ``result``'s rejects."""
    headers: dict[int, Header] = {}
    present: dict[int, bytes] = {}
    for i, (upload, data) in enumerate(zip(uploads, datas, strict=True)):
        try:
            if isinstance(data, Rejected):
                raise data
            headers[i] = read_header(data, settings.max_pixels, max_decode_bytes=settings.max_decode_bytes)
            present[i] = data
        except Rejected as rejected:
            result.reject(upload, rejected)
    return headers, present


def _decoded(
    uploads: Sequence[Upload],
    headers: dict[int, Header],
    present: dict[int, bytes],
    settings: Settings,
    device: Device,
    codec: LumaBatchCodec,
    result: BatchResult,
) -> dict[int, DecodedImage]:
    """The images (by index) decoded: the plain JPEGs together by ``codec``, and what it did not
    decode on the CPU, counted as a fallback (or a reject, when the CPU rejects it too)."""
    plain = [i for i, header in headers.items() if header.plain_jpeg]
    planes, why = _by_codec(codec, "decode", codec.decode, [present[i] for i in plain])
    images: dict[int, DecodedImage] = {}
    missing: dict[int, str] = {}
    for i, plane in zip(plain, planes, strict=True):
        if plane is None:
            missing[i] = why
        else:
            images[i] = DecodedImage(plane=plane, format="JPEG", orientation=headers[i].orientation)
    for i, header in headers.items():
        if i in images:
            continue
        try:
            decoded = decode_luma(present[i], settings.max_pixels, max_decode_bytes=settings.max_decode_bytes)
        except Rejected as rejected:  # what the codec could not decode, the CPU may reject: not a fallback
            result.reject(uploads[i], rejected)
            continue
        reason = missing.get(i) or f"{codec.name} decodes plain JPEGs, not {header.format} ({header.mode})"
        result.fallbacks.append(Fallback(uploads[i].key.key, "decode", reason))
        images[i] = DecodedImage(device.put(decoded.plane), decoded.format, decoded.orientation)
    return images


def _encoded(
    uploads: Sequence[Upload],
    shown: list[tuple[int, Any]],
    settings: Settings,
    device: Device,
    codec: LumaBatchCodec,
    result: BatchResult,
) -> list[bytes]:
    """The processed JPEG of each upright plane of ``shown`` (upload index, plane), encoded together by
    ``codec``; what it did not encode on the CPU, counted as a fallback."""
    planes = [plane for _, plane in shown]
    encoded, why = _by_codec(codec, "encode", lambda items: codec.encode(items, settings.jpeg_quality), planes)
    outputs: list[bytes] = []
    for (i, plane), output in zip(shown, encoded, strict=True):
        if output is None:
            result.fallbacks.append(Fallback(uploads[i].key.key, "encode", why))
            output = encode_luma_jpeg(device.get(plane), settings.jpeg_quality)
        outputs.append(output)
    return outputs


NO_BATCH_CODEC = "nvImageCodec is not installed (the gpu extra): decoded and encoded on the CPU"


def process_uploads_on(uploads: Sequence[Upload], store: BlobStore, settings: Settings, device: Device) -> BatchResult:
    """A batch on ``device``: the batch path where the device has a batch codec (a GPU with
    nvImageCodec), else ``process_uploads``. On a GPU without a codec that works (not installed, or
    one that cannot start), every image of the batch is counted as a fallback, with the reason."""
    try:
        codec, why = luma_batch_codec(device), NO_BATCH_CODEC
    except CodecFailed as error:
        codec, why = None, str(error)
    if codec is not None:
        return process_uploads_batched(uploads, store, settings, device, codec)
    result = process_uploads(uploads, store, settings, device)
    if device.name == "gpu":
        result.fallbacks += [Fallback(row.source_key, "decode", why) for row in result.images]
    return result


_codecs = threading.local()


def luma_batch_codec(device: Device) -> LumaBatchCodec | None:
    """The batch codec of ``device`` for this thread: nvImageCodec on a GPU where it is installed,
    else none. One per thread: an nvImageCodec decoder or encoder used by two batches at once
    fails their images (the wave test with two workers showed it)."""
    from graywave.kernels.gpu_codecs import NvImageCodecLuma, nvimgcodec_available

    if device.name != "gpu" or not nvimgcodec_available():
        return None
    codecs: dict[Device, LumaBatchCodec] = _codecs.__dict__.setdefault("by_device", {})
    if device not in codecs:
        codecs[device] = NvImageCodecLuma(device)
    return codecs[device]
