"""What an operator asks of a deployment (``graywave status``, ``graywave rejects``): recent waves
and their counts, what is pending now, the lake's latest commits, and which uploads were rejected and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from graywave.config import Settings
from graywave.service.backends import Backends
from graywave.storage.lake import AsOf, Commit, CommitInfo, Lake, Maintenance, Table


def recent_waves(lake: Lake, today: date, days: int = 7) -> pl.DataFrame:
    """Per wave of the last ``days`` days (newest first): date, wave, processed, rejected."""
    partitions = [today - timedelta(days=k) for k in range(days)]
    outcomes: tuple[tuple[Table, str], ...] = (("images", "processed"), ("rejects", "rejected"))
    counts = [
        pl.DataFrame(lake.scan(table, days=partitions, columns=["date", "wave"]))
        .group_by("date", "wave")
        .agg(pl.len().alias(outcome))
        for table, outcome in outcomes
    ]
    waves = counts[0].join(counts[1], on=["date", "wave"], how="full", coalesce=True)
    return waves.with_columns(pl.col("processed", "rejected").fill_null(0)).sort(
        ["date", "wave"], descending=[True, False]
    )


@dataclass(frozen=True)
class Status:
    waves: pl.DataFrame
    pending: int
    """Uploads a wave of today would process now (including bad keys it would reject)."""
    commits: list[Commit]
    """The latest commits to ``images``, newest first."""


def status(backends: Backends, today: date, days: int = 7) -> Status:
    from graywave.service.wave import plan_wave  # the waves' machinery (codecs): not for the queries

    plan = plan_wave(backends.blobs, backends.lake, today)
    return Status(
        recent_waves(backends.lake, today, days),
        len(plan.pending) + len(plan.bad_keys),
        backends.lake.history("images", 5),
    )


def rejects_of(lake: Lake, day: date, reason: str | None = None, *, as_of: AsOf = None) -> pl.DataFrame:
    """The rejects that the waves of ``day`` recorded (of one ``reason`` when given), oldest upload first."""
    columns = ["source_key", "user_id", "reason", "detail", "uploaded_at", "wave"]
    found = lake.scan(
        "rejects",
        days=[day],
        columns=columns,
        equal=None if reason is None else {"reason": reason},
        as_of=as_of,
    )
    return pl.DataFrame(found).sort("uploaded_at", "source_key", nulls_last=False)


MAINTAINED_DAYS = 3
"""The days whose partitions a nightly maintenance compacts: today and the two before (a wave of day D
writes to D only, the API to the day of each upload; older partitions change only by reprocessing
and deletes, which an operator's ``graywave lake optimize --days N`` covers)."""


def maintain_lake(
    backends: Backends,
    today: date,
    retention_hours: float,
    *,
    days: int | None = MAINTAINED_DAYS,
    flow_run: str | None = None,
) -> list[Maintenance]:
    """Compact and Z-order the last ``days`` days' partitions (every partition when None), checkpoint
    every table and vacuum the files that left it more than ``retention_hours`` ago."""
    partitions = None if days is None else [today - timedelta(days=k) for k in range(days)]
    info = CommitInfo("maintenance", today, flow_run=flow_run)
    return backends.lake.maintain(days=partitions, retention_hours=retention_hours, info=info)


@dataclass(frozen=True)
class LakeContents:
    """What the lake holds, as an analyst reads it: every image and reject, and one day's analytics."""

    images: pl.DataFrame
    rejects: pl.DataFrame
    median: list[float] | None
    """The day's median histogram; ``None`` before its analytics ran."""
    similar: dict[str, list[tuple[str, float]]]
    """Each user's nearest users that day, nearest first, with their distances."""
    images_versions: int
    """How many versions (commits) the ``images`` table has."""
    lake_url: str
    images_uri: str
    blobs_url: str


def lake_contents(backends: Backends, day: date) -> LakeContents:
    """The lake's images and rejects, and the median and nearest users of ``day``."""
    lake = backends.lake
    medians = lake.read("daily_median", [day]).column("histogram")
    similar: dict[str, list[tuple[str, float]]] = {}
    rows = lake.read("similar_users", [day]).sort_by([("user_id", "ascending"), ("rank", "ascending")])
    for row in rows.to_pylist():
        similar.setdefault(row["user_id"], []).append((row["neighbour_id"], row["distance"]))
    return LakeContents(
        images=pl.DataFrame(lake.read("images")),
        rejects=pl.DataFrame(lake.read("rejects")),
        median=medians[0].as_py() if len(medians) else None,
        similar=similar,
        images_versions=lake.version("images") + 1,
        lake_url=lake.url,
        images_uri=lake.uri("images"),
        blobs_url=backends.blobs.url,
    )


class Operations:
    """What an operator asks of one deployment and does to its lake, built once from the settings and
    the backends they open (``Graywave.operations``)."""

    def __init__(self, settings: Settings, backends: Backends):
        self.settings, self.backends = settings, backends

    def check_blob_store(self) -> None:
        """``BackendUnavailable`` (or ``NotFound``) when the blob store is not there: a missing upload
        folder or bucket."""
        self.backends.blobs.check()

    def has_tables(self) -> bool:
        """Whether the lake has any table yet (not: run from another folder, a volume not mounted)."""
        return any(version >= 0 for version in self.backends.lake.versions())

    def status(self, days: int = 7) -> Status:
        """Recent waves (``days`` of them), what a wave of today would process now, the latest commits."""
        return status(self.backends, self.settings.today(), days)

    def rejects(self, day: date, reason: str | None = None, *, as_of: AsOf = None) -> pl.DataFrame:
        """The rejects that the waves of ``day`` recorded (``rejects_of``)."""
        return rejects_of(self.backends.lake, day, reason, as_of=as_of)

    def lake_contents(self, day: date) -> LakeContents:
        """What the lake holds, with the analytics of ``day`` (``lake_contents``)."""
        return lake_contents(self.backends, day)

    def history(self, table: Table, limit: int) -> list[Commit]:
        """The latest ``limit`` commits to ``table``, newest first."""
        return self.backends.lake.history(table, limit)

    def migrate(self) -> list[Table]:
        """Convert a lake written before Delta Lake into Delta tables, in place (``Lake.migrate``)."""
        return self.backends.lake.migrate()

    def maintain_lake(self, days: int | None = MAINTAINED_DAYS, *, flow_run: str | None = None) -> list[Maintenance]:
        """``maintain_lake`` of today, vacuuming after ``GRAYWAVE_LAKE_RETENTION_HOURS``."""
        return maintain_lake(
            self.backends, self.settings.today(), self.settings.lake_retention_hours, days=days, flow_run=flow_run
        )
