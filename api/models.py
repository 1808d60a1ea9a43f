"""The API's response shapes (and their examples in the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graywave.records import ImageRecord, RejectRecord
from graywave.service.images import ImageEntry, ReprocessReport
from graywave.service.jobs import JobRun
from graywave.service.uploads import UPLOAD_CONTENT_TYPES

HISTOGRAM_EXAMPLE: list[Any] = [
    0,
    1021,
    5400,
    90210,
    310002,
    901233,
    1502345,
    2100456,
    2201000,
    1900220,
    1500110,
    900020,
    500101,
    200034,
    80012,
    1002,
]


class Links(BaseModel):
    self: str
    processed: str | None = None


class SelfLink(BaseModel):
    self: str


class Image(BaseModel):
    """One upload and what became of it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image_id": "9f2c1e0b7d6a5c4b3a21",
                    "user_id": "alice",
                    "status": "processed",
                    "file_name": "IMG_0001.HEIC",
                    "uploaded_at": "2026-11-25T09:58:03Z",
                    "processed_at": "2026-11-25T10:00:41Z",
                    "date": "2026-11-25",
                    "wave": "morning",
                    "width": 3024,
                    "height": 4032,
                    "format": "HEIF",
                    "pixel_count": 12192768,
                    "source_bytes": 2310012,
                    "processed_bytes": 1630221,
                    "histogram": HISTOGRAM_EXAMPLE,
                    "links": {
                        "self": "/images/alice/9f2c1e0b7d6a5c4b3a21",
                        "processed": "/images/alice/9f2c1e0b7d6a5c4b3a21/processed",
                    },
                }
            ]
        }
    )

    image_id: str
    user_id: str | None
    status: Literal["pending", "processed", "rejected"]
    file_name: str
    uploaded_at: datetime | None = None
    processed_at: datetime | None = None
    date: str | None = Field(None, description="Day of the wave that handled it.")
    wave: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    pixel_count: int | None = None
    source_bytes: int | None = None
    processed_bytes: int | None = None
    histogram: list[int] | None = Field(None, description="16 counts (GRAYWAVE_BINS) summing to pixel_count.")
    reason: str | None = Field(None, description="Why it was rejected: a stable code.")
    detail: str | None = None
    pending: str | None = Field(
        None,
        description="Why an upload sent with wait=true was left pending (answered 202): the next wave processes it.",
    )
    links: Links

    @classmethod
    def of(cls, entry: ImageEntry) -> Image:
        """The HTTP view of what the catalog knows of one upload."""
        base = f"/images/{entry.user_id}/{entry.image_id}"
        record = entry.record
        fields: dict[str, Any] = {}
        if isinstance(record, ImageRecord):
            fields = {
                name: getattr(record, name)
                for name in ("processed_at", "width", "height", "format", "pixel_count", "processed_bytes", "histogram")
            }
        elif isinstance(record, RejectRecord):
            fields = {"reason": record.reason, "detail": record.detail}
        return cls(
            image_id=entry.image_id,
            user_id=entry.user_id,
            status=entry.status,
            file_name=entry.file_name,
            uploaded_at=entry.uploaded_at,
            date=entry.date.isoformat() if entry.date else None,
            wave=entry.wave,
            source_bytes=entry.source_bytes,
            links=Links(self=base, processed=f"{base}/processed" if entry.status == "processed" else None),
            **fields,
        )


class ImagePage(BaseModel):
    items: list[Image]
    total: int
    limit: int
    offset: int
    next: str | None = Field(None, description="The next page, if there is one.")


class Count(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"count": 12}]})
    count: int = Field(description="How many images the request touched.")


class NotReprocessed(BaseModel):
    image_id: str
    source_key: str
    reason: Literal["vanished", "bad_key"] = Field(
        description="vanished: its original is gone; bad_key: its key is not an upload's. Its record is kept."
    )
    detail: str


class Reprocessed(BaseModel):
    """What a reprocessing did, image by image where it could not."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "count": 3,
                    "processed": 2,
                    "rejected": 0,
                    "failed": [
                        {
                            "image_id": "9f2c1e0b7d6a5c4b3a21",
                            "source_key": "uploads/2026-11-25/alice/IMG_0001.HEIC",
                            "reason": "vanished",
                            "detail": "the upload uploads/2026-11-25/alice/IMG_0001.HEIC is gone from the blob store",
                        }
                    ],
                }
            ]
        }
    )
    count: int = Field(description="Handled images asked for.")
    processed: int
    rejected: int = Field(description="Reprocessed into a reject (e.g. an original that became unreadable).")
    failed: list[NotReprocessed] = Field(description="Images that could not be reprocessed; they keep their record.")

    @classmethod
    def of(cls, report: ReprocessReport) -> Reprocessed:
        return cls(
            count=report.count,
            processed=report.processed,
            rejected=report.rejected,
            failed=[NotReprocessed.model_validate(failure, from_attributes=True) for failure in report.failed],
        )


class Job(BaseModel):
    """A background job: a Prefect flow run (its id is the job's id)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                    "kind": "reprocess",
                    "user_id": "alice",
                    "count": 1200,
                    "state": "SCHEDULED",
                    "failed": [],
                    "links": {"self": "/jobs/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
                }
            ]
        }
    )
    job_id: str = Field(description="The Prefect flow run id (open it in the Prefect UI).")
    kind: Literal["reprocess"] = "reprocess"
    user_id: str | None = Field(description="Whose images; null: every user's.")
    count: int | None = Field(None, description="Images to reprocess when the job was asked for.")
    state: str = Field(description="Prefect's state: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED...")
    failed: list[NotReprocessed] = Field(
        default_factory=list, description="Once it has finished: the images it could not reprocess."
    )
    links: SelfLink

    @classmethod
    def of(cls, run: JobRun) -> Job:
        """The HTTP view of a reprocessing job (and of its failures, once finished)."""
        return cls(
            job_id=str(run.job_id),
            user_id=run.user_id,
            count=run.count,
            state=run.state,
            failed=[NotReprocessed.model_validate(row) for row in run.failed],
            links=SelfLink(self=f"/jobs/{run.job_id}"),
        )


class PresignedUpload(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://photos.s3.amazonaws.com/",
                    "fields": {
                        "key": "uploads/2026-11-25/alice/5d1c...e2.jpg",
                        "Content-Type": "image/jpeg",
                        "policy": "...",
                        "x-amz-signature": "...",
                    },
                    "image_id": "0c8e1f2a3b4c5d6e7f80",
                    "key": "uploads/2026-11-25/alice/5d1c...e2.jpg",
                    "expires_at": "2026-11-25T10:05:00Z",
                }
            ]
        }
    )
    url: str
    fields: dict[str, str]
    image_id: str
    key: str
    expires_at: datetime


class UploadUrlRequest(BaseModel):
    content_type: str = Field(
        examples=["image/jpeg", "image/heic"],
        description="The photo's type; another one is refused with 415.",
        json_schema_extra={"enum": list(UPLOAD_CONTENT_TYPES)},  # documented; the 415 is the service's
    )


class Weekly(BaseModel):
    user_id: str
    week: str = Field(examples=["2026-W48"])
    monday: str
    sunday: str
    images: list[dict[str, Any]]


class Median(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"date": "2026-11-25", "users": 100000, "histogram": [0.0, 0.01, 0.2]}]}
    )
    date: str
    users: int
    histogram: list[float] = Field(description="Per-bin median of the users' normalised daily histograms.")


class Neighbour(BaseModel):
    rank: int
    user_id: str
    distance: float


class Similar(BaseModel):
    user_id: str
    date: str
    metric: str
    neighbours: list[Neighbour]


class Health(BaseModel):
    """The process is alive (``/healthz``): nothing else is checked."""

    status: Literal["ok"]


class Ready(BaseModel):
    """Every backend answered (``/readyz``); a 503 names those that did not."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "checks": {"blob_store": "ok", "lake": "ok", "mongodb": "ok"}}]
        }
    )
    status: Literal["ready"]
    checks: dict[str, Literal["ok"]] = Field(
        description="Each backend checked: `blob_store`, `lake`, and `mongodb` when configured."
    )


class ErrorBody(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["image 9f2c1e0b7d6a5c4b3a21 of alice does not exist"])
    status: int = Field(examples=[404])


class Error(BaseModel):
    """Every error has this shape."""

    error: ErrorBody
