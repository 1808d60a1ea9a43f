"""Typed records made up for tests, with only what a test cares about given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from graywave.records import ImageRecord, RejectRecord, image_id_for
from graywave.storage.lake import CommitInfo, Lake

DAY = date(2026, 11, 25)


def image_record(
    key: str | None = None,
    user: str = "alice",
    histogram: Sequence[int] = (8,) + (0,) * 15,
    upload_date: date = DAY,
    name: str = "a.jpg",
    uploaded_at: datetime | None = None,
) -> ImageRecord:
    """An image of ``user`` uploaded on ``upload_date`` as ``name`` (or at ``key``)."""
    key = key or f"uploads/{upload_date}/{user}/{name}"
    at = uploaded_at or datetime.combine(upload_date, datetime.min.time(), UTC) + timedelta(hours=9)
    pixels = sum(histogram)
    return ImageRecord(
        image_id=image_id_for(key),
        user_id=user,
        upload_date=upload_date,
        file_name=key.rsplit("/", 1)[-1],
        source_key=key,
        processed_key=f"processed/{upload_date}/{user}/{image_id_for(key)}.jpg",
        uploaded_at=at,
        processed_at=at,
        width=pixels,
        height=1,
        format="JPEG",
        pixel_count=pixels,
        source_bytes=100,
        processed_bytes=50,
        histogram=tuple(histogram),
    )


def reject_record(key: str, user: str | None = None, reason: str = "corrupt") -> RejectRecord:
    return RejectRecord(
        source_key=key,
        user_id=user,
        reason=reason,
        detail="bad",
        uploaded_at=None,
        seen_at=datetime.now(UTC),
        source_bytes=3,
    )


def append_images(lake: Lake, day: date, wave: str, records: Sequence[ImageRecord]) -> int:
    """Record ``records`` in ``images`` as the wave ``wave`` of ``day`` would; the rows inserted."""
    info = CommitInfo("record", day, wave)
    return lake.record("images", ImageRecord.to_arrow(records), day=day, wave=wave, among=[day], info=info)


def append_rejects(lake: Lake, day: date, wave: str, records: Sequence[RejectRecord]) -> int:
    info = CommitInfo("record", day, wave)
    return lake.record("rejects", RejectRecord.to_arrow(records), day=day, wave=wave, among=[day], info=info)
