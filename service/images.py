"""Images as the API serves them, and what the API changes: store an upload, process uploads now,
delete images everywhere.

What is known of an upload is an ``ImageEntry``: ``pending`` (listed in the blob store, no wave has
handled it yet), ``processed`` (with its ``ImageRecord``) or ``rejected`` (with its
``RejectRecord``). Handled uploads come from the catalog (``Backends.catalog``: MongoDB when it is
configured, else the lake, read with filters pushed down); pending ones are the uploads that a wave
of today would still pick up.

Processing and deleting take no lock: they write while a wave drains. Recording is idempotent
(``Backends.record``), so an upload that the API and a wave process at once is recorded once; a
delete that races a wave wins (the wave removes what it recorded of an upload whose original is
gone, ``Backends.drop_deleted``).

Reprocessing (``Images.reprocess``) never loses a record: an image whose original is gone, or
whose key is not an upload's, is reported and keeps its record; new rows replace old ones only once
they are written, in the old rows' partition (the day whose analytics they count in). More than a
few images are reprocessed by a background job (``Images.reprocessing`` says which, ``service.jobs``).

It is all reached through ``Images``, built once from the settings and their backends
(``Graywave.images``): no function here takes them as parameters.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from graywave.config import Settings
from graywave.errors import BackendUnavailable, BadKey, BlobExists, DeviceUnavailable, NotFound, RejectReason
from graywave.kernels import select_device
from graywave.kernels.codecs import identify
from graywave.records import ImageRecord, RejectRecord, image_id_for, wave_upload_days
from graywave.service.backends import Backends, Deletion
from graywave.service.batch import BatchResult, Upload, process_uploads
from graywave.storage.blobs import BlobInfo
from graywave.storage.catalog import Recorded
from graywave.storage.layout import parse_upload_key, safe_file_name, upload_key, uploads_prefix
from graywave.storage.s3 import PresignedPost, S3BlobStore
from graywave.storage.uploads import presign_upload

logger = logging.getLogger("graywave.images")

API_WAVE = "api"
"""The wave name under which the API records what it processes."""
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "AVIF": "avif"}

Status = Literal["pending", "processed", "rejected"]
PROCESSED_URL_EXPIRY_S = 300


@dataclass(frozen=True)
class ImageEntry:
    """One upload and what became of it; ``date`` and ``wave`` say which wave handled it."""

    record: ImageRecord | RejectRecord | Upload
    date: date | None = None
    wave: str | None = None

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def image_id(self) -> str:
        return self.record.image_id

    @property
    def source_key(self) -> str:
        return self.record.source_key

    @property
    def user_id(self) -> str | None:
        return self.record.user_id

    @property
    def file_name(self) -> str:
        return self.record.file_name

    @property
    def uploaded_at(self) -> datetime | None:
        return self.record.uploaded_at

    @property
    def source_bytes(self) -> int | None:
        return self.record.source_bytes


class ImageCatalog:
    """Every upload the API can show, of one user or of all: the reads of ``Images``."""

    def __init__(self, backends: Backends):
        self.backends = backends

    # --- handled uploads -------------------------------------------------------------------------

    def _handled(self, user_id: str | None, offset: int = 0, limit: int = 0) -> tuple[list[ImageEntry], int]:
        """Handled uploads (of one user, or of all), oldest upload first: one page (``limit`` 0:
        all from ``offset``) and the total."""
        found, total = self.backends.catalog.page(user_id, offset, limit)
        return [_entry(one) for one in found], total

    def warm_up(self) -> None:
        """Get the catalog ready to serve the first request (``Catalog.warm_up``), so that the first
        request does not pay for it; ``BackendUnavailable`` when it cannot."""
        self.backends.catalog.warm_up()

    # --- pending uploads -------------------------------------------------------------------------

    def _pending(self, user_id: str | None, today: date) -> list[ImageEntry]:
        """Uploads that a wave of ``today`` would still pick up, oldest first."""
        days = wave_upload_days(today)
        blobs: list[BlobInfo] = []
        for day in days:
            blobs += self.backends.blobs.list(uploads_prefix(day) + (f"{user_id}/" if user_id else ""))
        handled = self.backends.catalog.handled({blob.key for blob in blobs}, days)
        entries = []
        for blob in blobs:
            if blob.key in handled:
                continue
            try:
                entries.append(ImageEntry(Upload(parse_upload_key(blob.key), blob)))
            except BadKey:
                continue  # a wave rejects it with bad_key; it belongs to no user
        return entries

    # --- what the API asks -----------------------------------------------------------------------

    def page(self, today: date, user_id: str | None, offset: int, limit: int) -> tuple[list[ImageEntry], int]:
        """One page of every image (handled ones oldest upload first, then the pending) and the total."""
        pending = self._pending(user_id, today)
        handled, handled_total = self._handled(user_id, offset, limit)
        start = max(0, offset - handled_total)
        return handled + pending[start : start + limit - len(handled)], handled_total + len(pending)

    def entries(self, today: date, user_id: str | None = None) -> list[ImageEntry]:
        """Every image of one user (or of all), as ``page`` orders them."""
        handled, _ = self._handled(user_id)
        return handled + self._pending(user_id, today)

    def get(self, today: date, user_id: str, image_id: str) -> ImageEntry:
        """One image of ``user_id``; ``NotFound`` when it has none of that id."""
        handled = self.handled(user_id, image_id)
        if handled is not None:
            return handled
        for entry in self._pending(user_id, today):
            if entry.image_id == image_id:
                return entry
        # A wave may have recorded it between the two looks: pending turns into handled, never back.
        handled = self.handled(user_id, image_id)
        if handled is not None:
            return handled
        raise NotFound(f"image {image_id} of {user_id} does not exist")

    def handled(self, user_id: str, image_id: str) -> ImageEntry | None:
        """The handled image ``image_id`` of ``user_id`` (processed or rejected), or None."""
        found = self.backends.catalog.image(user_id, image_id)
        return None if found is None else _entry(found)


def _entry(found: Recorded) -> ImageEntry:
    return ImageEntry(found.record, found.day, found.wave)


# --- what the API changes --------------------------------------------------------------------------


def _names_to_try(name: str | None, extension: str) -> Iterator[str]:
    """The uploaded name, then ``stem (2).ext`` ... ``stem (20).ext``, then a random name."""
    if name is not None:
        yield name
        stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
        for k in range(2, 21):
            yield f"{stem} ({k}){dot}{ext}"
    yield f"{uuid.uuid4().hex}.{extension}"


@dataclass(frozen=True)
class ProcessedImage:
    """Where the processed JPEG of an image is: its bytes (local folder), or a short-lived URL (S3)."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class UploadedNow:
    """An upload stored and, unless ``pending`` says why not, processed and recorded at once."""

    key: str
    pending: str | None = None
    """Why it was left pending for the next wave (the lake or the device unavailable now); None
    when it was processed."""

    @property
    def processed(self) -> bool:
        return self.pending is None


@dataclass(frozen=True)
class NotReprocessed:
    """An image that could not be reprocessed, and kept its record: why (``vanished``: its original is
    gone; ``bad_key``: its key is not an upload's)."""

    image_id: str
    source_key: str
    reason: str
    detail: str


@dataclass(frozen=True)
class ReprocessReport:
    """What a reprocessing did: images asked for, processed, rejected, and those it could not reprocess."""

    count: int
    processed: int
    rejected: int
    failed: tuple[NotReprocessed, ...]

    def line(self) -> str:
        return (
            f"reprocessed {self.count} images: {self.processed} processed, {self.rejected} rejected,"
            f" {len(self.failed)} could not be reprocessed (kept as they were)"
        )


@dataclass(frozen=True)
class ReprocessNow:
    """Few enough handled images to reprocess in the request that asks (``run``: the report)."""

    images: Images
    entries: tuple[ImageEntry, ...]

    def run(self) -> ReprocessReport:
        return self.images.reprocess(self.entries)


@dataclass(frozen=True)
class ReprocessLater:
    """Too many handled images for one request: a background job (``service.jobs``) should reprocess
    ``count`` images of ``user_id`` (None: of every user)."""

    user_id: str | None
    count: int


class Images:
    """Every upload of one deployment as the API shows it (``ImageCatalog``), and what the API
    changes: built once from the settings and the backends they open (``Graywave.images``)."""

    def __init__(self, settings: Settings, backends: Backends):
        self.settings, self.backends = settings, backends
        self.catalog = ImageCatalog(backends)

    # --- what the API reads ----------------------------------------------------------------------

    def page(self, today: date, user_id: str | None, offset: int, limit: int) -> tuple[list[ImageEntry], int]:
        """One page of every image (handled ones oldest upload first, then the pending) and the total."""
        return self.catalog.page(today, user_id, offset, limit)

    def entries(self, today: date, user_id: str | None = None) -> list[ImageEntry]:
        """Every image of one user (or of all), as ``page`` orders them."""
        return self.catalog.entries(today, user_id)

    def get(self, today: date, user_id: str, image_id: str) -> ImageEntry:
        """One image of ``user_id``; ``NotFound`` when it has none of that id."""
        return self.catalog.get(today, user_id, image_id)

    def handled(self, user_id: str, image_id: str) -> ImageEntry | None:
        """The handled image ``image_id`` of ``user_id`` (processed or rejected), or None."""
        return self.catalog.handled(user_id, image_id)

    def warm_up(self) -> None:
        """Get the catalog ready to serve the first request (``ImageCatalog.warm_up``)."""
        self.catalog.warm_up()

    def processed_image(self, entry: ImageEntry) -> ProcessedImage:
        """The processed image of ``entry``; ``NotFound`` when it is pending or rejected."""
        if not isinstance(entry.record, ImageRecord):
            raise NotFound(f"image {entry.image_id} is {entry.status}: it has no processed image")
        key = entry.record.processed_key
        blobs = self.backends.blobs
        if isinstance(blobs, S3BlobStore):
            return ProcessedImage(url=blobs.presigned_get(key, PROCESSED_URL_EXPIRY_S))
        try:
            return ProcessedImage(data=blobs.read(key))
        except NotFound:  # deleted meanwhile; the message names the image, not the store's key
            raise NotFound(f"image {entry.image_id} has no processed image (it was deleted)") from None

    # --- what the API changes --------------------------------------------------------------------

    def store_upload(self, user_id: str, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Check that ``data`` is an accepted image (header only) and store it as a new upload of today,
        under its own ``file_name`` (made safe: ``safe_file_name``) when it has one: ``IMG_0001 (2).HEIC``
        when that name is taken that day, a random name when it has none.

        Returns its key; raises ``Rejected`` for what a wave would reject from the header.
        """
        settings, blobs = self.settings, self.backends.blobs
        fmt = identify(data, settings.max_pixels, max_decode_bytes=settings.max_decode_bytes)
        folder = f"{uploads_prefix(settings.today())}{user_id}/"
        taken = {blob.key for blob in blobs.list(folder)}  # one listing; a race is caught below
        for name in _names_to_try(safe_file_name(file_name), EXTENSIONS[fmt]):
            key = upload_key(settings.today(), user_id, name)
            if key in taken or self.catalog.handled(user_id, image_id_for(key)) is not None:
                continue  # a record of that id outlives its blob (a delete that failed half-way): not reused
            try:
                blobs.write(key, data, content_type, overwrite=False)
            except BlobExists:
                continue
            return key
        raise AssertionError("a random name was taken")  # pragma: no cover - 128 random bits

    def receive(self, key: str, data: bytes) -> None:
        """An upload as a phone's direct upload lands: ``data`` written at its upload ``key`` as it is
        (``BadKey`` for a key that is not one), unchecked: the next wave of its day judges it."""
        parse_upload_key(key)
        self.backends.blobs.write(key, data, "application/octet-stream")

    def presigned_upload(self, user_id: str, content_type: str) -> PresignedPost:
        """A presigned S3 POST for one direct upload of today (``InvalidInput`` on a local blob store)."""
        settings = self.settings
        return presign_upload(
            self.backends.blobs,
            settings.today(),
            user_id,
            content_type,
            settings.max_upload_bytes,
            settings.upload_url_expiry_s,
        )

    @property
    def direct_uploads(self) -> bool:
        """Whether phones can upload straight to the blob store (``presigned_upload``: S3 only)."""
        return self.backends.blobs.remote

    def upload_now(self, user_id: str, data: bytes, content_type: str, file_name: str | None = None) -> UploadedNow:
        """Store a new upload and process it at once.

        A wave that runs meanwhile is no obstacle: the upload is recorded by an insert-only MERGE, so
        if the wave processes it too, one row stays. Where the lake or the device cannot be used now
        the upload stays stored as pending, with the reason (the next wave processes it), instead of
        failing after it was stored, which a client's retry would duplicate.
        """
        key = self.store_upload(user_id, data, content_type, file_name)
        try:
            upload = self._upload_of(key)
            result = process_uploads([upload], self.backends.blobs, self.settings, select_device(self.settings.device))
            self.backends.record(upload.key.upload_date, API_WAVE, result.images, result.rejects)
        except BackendUnavailable as error:  # its words name paths and hosts: the log's, not the client's
            logger.warning("upload %s left pending: %s", key, error)
            return UploadedNow(key, "a storage backend is unavailable now: the next wave processes it")
        except DeviceUnavailable as error:
            logger.warning("upload %s left pending: %s", key, error)
            return UploadedNow(key, "the processing device is unavailable now: the next wave processes it")
        return UploadedNow(key)

    def replace_and_reprocess(self, entry: ImageEntry, data: bytes, content_type: str) -> None:
        """Replace an upload's original and reprocess it; its new row replaces the old one in one commit
        per table (``Backends.rerecord``), while waves run or not."""
        settings, backends = self.settings, self.backends
        identify(data, settings.max_pixels, max_decode_bytes=settings.max_decode_bytes)
        select_device(settings.device)  # a device that cannot be used refuses before the original is replaced
        if entry.status != "pending" and not backends.blobs.exists(entry.source_key):
            # A record whose original is gone: a delete stopped half-way. Finish it; never bring it back.
            backends.delete(Deletion((entry.source_key,), _counted([entry])))
            raise NotFound(f"image {entry.image_id} was deleted")
        backends.blobs.write(entry.source_key, data, content_type)
        self._process([self._upload_of(entry.source_key)], [entry])

    def reprocessing(self, user_id: str | None) -> ReprocessNow | ReprocessLater:
        """How the handled images of ``user_id`` (None: of every user) are reprocessed: up to
        ``GRAYWAVE_API_INLINE_REPROCESS_MAX`` of them now, in the request (``ReprocessNow``), more by
        a background job (``ReprocessLater``). Pending uploads are left to the waves."""
        entries = self.entries(self.settings.today(), user_id)
        handled = tuple(entry for entry in entries if entry.status != "pending")
        if len(handled) > self.settings.api_inline_reprocess_max:
            return ReprocessLater(user_id, len(handled))
        return ReprocessNow(self, handled)

    def reprocess(
        self,
        entries: Iterable[ImageEntry],
        *,
        progress: Callable[[ReprocessReport], None] | None = None,
    ) -> ReprocessReport:
        """Process handled images again from their originals (pending ones are left to the waves).

        ``settings.batch_size`` images at a time, each batch's rows one commit per table: waves and the
        API's writes go on meanwhile. An image that cannot be reprocessed keeps its record and is
        reported in ``failed``.
        """
        settings = self.settings
        entries = [entry for entry in entries if entry.status != "pending"]
        select_device(settings.device)  # a device that cannot be used refuses before anything changes
        processed = rejected = 0
        failed: list[NotReprocessed] = []
        for start in range(0, len(entries), settings.batch_size):
            chunk = entries[start : start + settings.batch_size]
            ready: list[tuple[ImageEntry, Upload]] = []
            for entry in chunk:
                try:
                    ready.append((entry, self._upload_of(entry.source_key)))
                except (BadKey, NotFound) as error:
                    reason = RejectReason.BAD_KEY if isinstance(error, BadKey) else RejectReason.VANISHED
                    failed.append(NotReprocessed(entry.image_id, entry.source_key, reason, str(error)))
            if ready:
                result = self._process([u for _, u in ready], [e for e, _ in ready])
                processed, rejected = processed + len(result.images), rejected + len(result.rejects)
            if progress is not None:
                progress(ReprocessReport(len(entries), processed, rejected, tuple(failed)))
        return ReprocessReport(len(entries), processed, rejected, tuple(failed))

    def delete(self, entries: Iterable[ImageEntry]) -> None:
        """Remove images everywhere: originals, processed images, lake rows, MongoDB documents, and the
        analytics rows that the processed ones counted in (their owners' rows of those days; rerun the
        analytics to recompute them). A rejected or pending upload counted in no analytics: deleting it
        changes none. A delete that stops half-way is finished by the next wave (``Backends.delete``)."""
        now = self._as_they_are_now(list(entries))
        self.backends.delete(Deletion(tuple(entry.source_key for entry in now), _counted(now)))

    # --- their parts -----------------------------------------------------------------------------

    def _upload_of(self, key: str) -> Upload:
        """The upload at ``key`` as the blob store lists it; ``BadKey``, or ``NotFound`` when it is gone."""
        parsed = parse_upload_key(key)
        for blob in self.backends.blobs.list(key):
            if blob.key == key:
                return Upload(parsed, blob)
        raise NotFound(f"the upload {key} is gone from the blob store")

    def _process(self, uploads: Sequence[Upload], before: Sequence[ImageEntry]) -> BatchResult:
        """Process ``uploads`` and record them in place of what ``before`` held of them (their rows stay
        in the partitions they were in; a processed image that became a reject loses its old JPEG)."""
        backends = self.backends
        result = process_uploads(uploads, backends.blobs, self.settings, select_device(self.settings.device))
        days = {entry.source_key: entry.date for entry in before if entry.date is not None}
        backends.rerecord(API_WAVE, result.images, result.rejects, days=days)
        now_rejected = {reject.source_key for reject in result.rejects}
        for entry in before:
            if isinstance(entry.record, ImageRecord) and entry.source_key in now_rejected:
                backends.blobs.delete(entry.record.processed_key)
        return result

    def _as_they_are_now(self, entries: list[ImageEntry]) -> list[ImageEntry]:
        """``entries`` as the lake has them now: an upload that was pending when it was read may have
        been handled since, by a wave, with a processed image and a day of its own."""
        now = []
        for entry in entries:
            handled = (
                self.catalog.handled(entry.user_id, entry.image_id)
                if entry.status == "pending" and entry.user_id
                else None
            )
            now.append(handled or entry)
        return now


def _counted(entries: Iterable[ImageEntry]) -> tuple[tuple[str, date], ...]:
    """(user, day) of the analytics that ``entries`` counted in: processed images only."""
    return tuple(
        sorted(
            {
                (entry.user_id, entry.date)
                for entry in entries
                if isinstance(entry.record, ImageRecord) and entry.user_id and entry.date is not None
            }
        )
    )
