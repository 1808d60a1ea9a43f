"""The records every layer passes around: a processed upload (``ImageRecord``) and a rejected one
(``RejectRecord``). Each field is declared once, here, with its Arrow type; each class owns its
Arrow schema and its conversions to and from an Arrow table and a MongoDB document.

The MongoDB document follows the design document's schema (``_id``, ``user_id``, ``file_name``,
``image_url``, ``timestamp``, ``histogram``) plus what serving needs (status, the wave, keys,
sizes); ``_id`` is the ``image_id`` and ``timestamp`` the ``uploaded_at`` of the record.

The wave-day rule also lives here, once: an upload of day X is handled by a wave of day X or X + 1.

>>> from datetime import date
>>> wave_upload_days(date(2026, 11, 25))
(datetime.date(2026, 11, 24), datetime.date(2026, 11, 25))
>>> handling_days(date(2026, 11, 24), date(2026, 11, 25))
[datetime.date(2026, 11, 24), datetime.date(2026, 11, 25), datetime.date(2026, 11, 26)]
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Literal, Self

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")

WAVE_LOOKBACK_DAYS = 1
"""A wave of day D handles the uploads of D and of the ``WAVE_LOOKBACK_DAYS`` days before."""

MAX_TOP_N = 100
"""The most neighbours per user the analytics keep (the CLI's --top-n, and what the GPU kernel's
table holds with the re-scoring's extra candidates)."""


def wave_upload_days(day: date) -> tuple[date, ...]:
    """The upload days a wave of ``day`` handles: the day before, then the day itself."""
    return tuple(day - timedelta(days=k) for k in range(WAVE_LOOKBACK_DAYS, -1, -1))


def handling_days(first: date, last: date | None = None) -> list[date]:
    """The wave days (lake ``date`` partitions) that can hold the uploads of ``first`` .. ``last``."""
    last = last or first
    return [first + timedelta(days=k) for k in range((last - first).days + WAVE_LOOKBACK_DAYS + 1)]


def image_id_for(source_key: str) -> str:
    """A stable id for an upload key: 20 hex digits (80 bits) of its SHA-256.

    >>> image_id_for("uploads/2026-11-25/alice/IMG_0001.jpg")
    '18920df3bba402f9ab69'
    """
    return hashlib.sha256(source_key.encode()).hexdigest()[:20]


def _column(arrow_type: pa.DataType, nullable: bool = False) -> Any:
    return field(metadata={"arrow": arrow_type, "nullable": nullable})


class _Record:
    """The Arrow side of a frozen record dataclass: its schema from its fields, and table conversions."""

    __slots__ = ()
    ARROW_SCHEMA: ClassVar[pa.Schema]

    @classmethod
    def _schema(cls) -> pa.Schema:
        return pa.schema(
            pa.field(f.name, f.metadata["arrow"], nullable=f.metadata["nullable"])
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )

    @classmethod
    def to_arrow(cls, records: Sequence[Self]) -> pa.Table:
        """The records as one Arrow table of ``ARROW_SCHEMA`` (column by column, no row dicts)."""
        names = cls.ARROW_SCHEMA.names
        return pa.table(
            {name: [getattr(record, name) for record in records] for name in names}, schema=cls.ARROW_SCHEMA
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> list[Self]:
        """Records from the rows of ``table`` (extra columns, such as the lake's partitions, are ignored)."""
        columns = {name: table.column(name).to_pylist() for name in cls.ARROW_SCHEMA.names}
        return [cls._from_values({name: values[i] for name, values in columns.items()}) for i in range(table.num_rows)]

    @classmethod
    def _from_values(cls, values: Mapping[str, Any]) -> Self:
        return cls(**values)

    def to_document(self, day: date, wave: str, url_for: Callable[[str], str]) -> dict[str, Any]:
        """The MongoDB document of the record, as recorded by the wave ``wave`` of ``day``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ImageRecord(_Record):
    """A processed upload: where it came from, where its grayscale image is, and its histogram."""

    image_id: str = _column(pa.string())
    user_id: str = _column(pa.string())
    upload_date: date = _column(pa.date32())
    file_name: str = _column(pa.string())
    source_key: str = _column(pa.string())
    processed_key: str = _column(pa.string())
    uploaded_at: datetime = _column(UTC_MICROS)
    processed_at: datetime = _column(UTC_MICROS)
    width: int = _column(pa.int32())
    height: int = _column(pa.int32())
    format: str = _column(pa.string())
    pixel_count: int = _column(pa.int64())
    source_bytes: int = _column(pa.int64())
    processed_bytes: int = _column(pa.int64())
    histogram: tuple[int, ...] = _column(pa.list_(pa.int64()))

    status: ClassVar[Literal["processed"]] = "processed"

    @classmethod
    def _from_values(cls, values: Mapping[str, Any]) -> Self:
        return cls(**{**values, "histogram": tuple(values["histogram"])})

    def to_document(self, day: date, wave: str, url_for: Callable[[str], str]) -> dict[str, Any]:
        """The MongoDB document of the design's schema, recorded by the wave ``wave`` of ``day``."""
        return {
            **_design_document(self, day, wave, url_for),
            "histogram": list(self.histogram),
            "upload_date": self.upload_date.isoformat(),
            "processed_key": self.processed_key,
            "processed_url": url_for(self.processed_key),
            "processed_at": self.processed_at,
            "width": self.width,
            "height": self.height,
            "pixel_count": self.pixel_count,
            "format": self.format,
            "source_bytes": self.source_bytes,
            "processed_bytes": self.processed_bytes,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Self:
        renamed = {
            "image_id": doc["_id"],
            "uploaded_at": doc["timestamp"],
            "upload_date": date.fromisoformat(doc["upload_date"]),
        }
        return cls._from_values({name: renamed.get(name, doc.get(name)) for name in cls.ARROW_SCHEMA.names})


@dataclass(frozen=True, slots=True)
class RejectRecord(_Record):
    """An upload that did not become an image, with a stable reason code and a human detail.

    ``user_id`` is unknown (None) when the key itself is malformed; ``uploaded_at`` and
    ``source_bytes`` when the upload vanished before it could be looked at.
    """

    source_key: str = _column(pa.string())
    user_id: str | None = _column(pa.string(), nullable=True)
    reason: str = _column(pa.string())
    detail: str = _column(pa.string())
    uploaded_at: datetime | None = _column(UTC_MICROS, nullable=True)
    seen_at: datetime = _column(UTC_MICROS)
    source_bytes: int | None = _column(pa.int64(), nullable=True)

    status: ClassVar[Literal["rejected"]] = "rejected"

    @property
    def image_id(self) -> str:
        return image_id_for(self.source_key)

    @property
    def file_name(self) -> str:
        return self.source_key.rsplit("/", 1)[-1]

    def to_document(self, day: date, wave: str, url_for: Callable[[str], str]) -> dict[str, Any]:
        return {
            **_design_document(self, day, wave, url_for),
            "reason": self.reason,
            "detail": self.detail,
            "source_bytes": self.source_bytes,
            "seen_at": self.seen_at,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Self:
        renamed = {"uploaded_at": doc.get("timestamp")}
        return cls._from_values({name: renamed.get(name, doc.get(name)) for name in cls.ARROW_SCHEMA.names})


ImageRecord.ARROW_SCHEMA = ImageRecord._schema()
RejectRecord.ARROW_SCHEMA = RejectRecord._schema()


def _design_document(
    record: ImageRecord | RejectRecord, day: date, wave: str, url_for: Callable[[str], str]
) -> dict[str, Any]:
    """What every ``images`` document has: the design's fields (``timestamp`` is ``uploaded_at``),
    the status, the key and the wave that recorded it."""
    return {
        "_id": record.image_id,
        "user_id": record.user_id,
        "file_name": record.file_name,
        "image_url": url_for(record.source_key),
        "timestamp": record.uploaded_at,
        "status": record.status,
        "date": day.isoformat(),
        "wave": wave,
        "source_key": record.source_key,
    }


def record_from_document(doc: Mapping[str, Any]) -> ImageRecord | RejectRecord:
    """The record a MongoDB ``images`` document describes (by its ``status``)."""
    return ImageRecord.from_document(doc) if doc["status"] == ImageRecord.status else RejectRecord.from_document(doc)
