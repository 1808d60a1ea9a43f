"""The catalog: where the handled uploads (and the daily analytics) are read from, as one interface
with two implementations, chosen once where the backends are opened (``Backends.open``).

- ``LakeCatalog`` (the embedded default): the lake's own tables serve the reads. Its writes do
  nothing: the lake is the source of truth for what is handled and ``Backends`` (and the analytics)
  write it in every configuration, so a catalog over it has nothing more to write.
- ``graywave.storage.mongo.MongoCatalog`` (``GRAYWAVE_MONGODB_URI`` set): MongoDB is the serving
  copy; every write to the lake is mirrored to it, and the reads go to it.

The service asks the catalog and never which one it is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from graywave.records import ImageRecord, RejectRecord, handling_days
from graywave.storage.lake import Lake, Table

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

UPLOAD_TABLES: tuple[Table, ...] = ("images", "rejects")
"""The lake's tables of handled uploads: processed images and rejects."""


@dataclass(frozen=True)
class Recorded:
    """A handled upload's record, and the day and the wave that recorded it (``date``: the partition,
    the day whose analytics it counts in)."""

    record: ImageRecord | RejectRecord
    day: date
    wave: str


class Catalog(Protocol):
    """What the service reads and writes of handled uploads, whichever store serves them."""

    def prepare(self) -> None:
        """Get ready for a wave's writes and the queries that follow them (MongoDB: its indexes)."""

    def warm_up(self) -> None:
        """Get ready to serve the first read fast; ``BackendUnavailable`` when the store cannot be read."""

    def readiness_checks(self, timeout_s: float) -> Mapping[str, Callable[[], object]]:
        """The checks of a readiness probe that this catalog adds to the blob store's and the lake's,
        by name: each raises when its backend cannot be used now."""

    def record(self, records: Iterable[tuple[ImageRecord | RejectRecord, date]], wave: str) -> None:
        """Record handled uploads (each with the day whose partition holds it), recorded by ``wave``,
        in place of any earlier record of the same upload: replaying it changes nothing."""

    def forget(self, source_keys: Collection[str]) -> None:
        """Remove every record of these uploads."""

    def record_analytics(
        self, day: date, daily: pl.DataFrame, median: dict[str, Any] | None, similar: pl.DataFrame, metric: str
    ) -> None:
        """Record a day's analytics: the users' histograms, the median (None: no data) and the similar
        users of ``metric`` (``similar_users_table``'s rows), in place of that day's earlier ones."""

    def forget_analytics(self, users: Collection[str], day: date) -> None:
        """Remove these users' analytics of ``day`` (their histograms and their similar-users rows,
        as users and as neighbours)."""

    def page(self, user_id: str | None, offset: int = 0, limit: int = 0) -> tuple[list[Recorded], int]:
        """Handled uploads of one user (or of all), oldest upload first (bad-key rejects, which have
        no upload time, first of all; then by image id): one page (``limit`` 0: all from
        ``offset``) and the total."""

    def image(self, user_id: str, image_id: str) -> Recorded | None:
        """The handled upload ``image_id`` of ``user_id``, or None."""

    def handled(self, source_keys: Collection[str], days: Collection[date]) -> set[str]:
        """Which of these uploads, listed under ``days``' upload folders, are handled (processed or
        rejected)."""

    def close(self) -> None: ...


def upload_order(found: Recorded) -> tuple[Any, ...]:
    """Oldest upload first; bad-key rejects (no time) first of all; then by id."""
    uploaded = found.record.uploaded_at
    return (uploaded is not None, uploaded or datetime.min, found.record.image_id)


class LakeCatalog:
    """The lake's ``images`` and ``rejects`` tables as the catalog, read with filters pushed down
    (one user's rows, never the whole lake, unless all users are asked for).

    Its writes (``prepare``, ``record``, ``forget``, ``record_analytics``, ``forget_analytics``) do
    nothing on purpose: the lake is written by ``Backends`` and the analytics in every
    configuration, since it is the source of truth, and this catalog reads those same tables.
    Writing them here too would write every row twice."""

    def __init__(self, lake: Lake):
        self.lake = lake

    def prepare(self) -> None:
        """Nothing: a Delta table needs no index."""

    def warm_up(self) -> None:
        """Open the lake's tables (their logs read up to the latest checkpoint) and read their data
        files' footers (``Lake.prepare_lookups``: metadata, no scan of the data)."""
        self.lake.check()
        for table in UPLOAD_TABLES:
            self.lake.prepare_lookups(table, ())

    def readiness_checks(self, timeout_s: float) -> Mapping[str, Callable[[], object]]:
        """None: the lake is checked as a backend of its own."""
        return {}

    def record(self, records: Iterable[tuple[ImageRecord | RejectRecord, date]], wave: str) -> None:
        """Nothing: ``Backends`` records them in the lake."""

    def forget(self, source_keys: Collection[str]) -> None:
        """Nothing: ``Backends`` deletes the lake's rows."""

    def record_analytics(
        self, day: date, daily: pl.DataFrame, median: dict[str, Any] | None, similar: pl.DataFrame, metric: str
    ) -> None:
        """Nothing: the analytics replace the lake's rows themselves."""

    def forget_analytics(self, users: Collection[str], day: date) -> None:
        """Nothing: ``Backends`` deletes the lake's rows."""

    def _found(self, user_id: str | None, image_id: str | None = None) -> list[Recorded]:
        """Handled uploads, opening only the files whose statistics admit ``image_id`` (when given)
        or ``user_id`` (``Lake.lookup``); every file only when both are None."""
        import polars as pl

        lake = self.lake
        if user_id is None:
            images, rejects = lake.scan("images"), lake.scan("rejects")
        elif image_id is None:
            images = lake.lookup("images", "user_id", user_id)
            rejects = lake.lookup("rejects", "user_id", user_id)
        else:
            images = lake.lookup("images", "user_id", user_id, filter=pl.col("image_id") == image_id)
            rejects = lake.lookup("rejects", "user_id", user_id)  # a reject's id is its key's hash: few rows
        found = _recorded(ImageRecord, images) + [
            one for one in _recorded(RejectRecord, rejects) if image_id is None or one.record.image_id == image_id
        ]
        return sorted(found, key=upload_order)

    def page(self, user_id: str | None, offset: int = 0, limit: int = 0) -> tuple[list[Recorded], int]:
        everything = self._found(user_id)
        return everything[offset : offset + limit if limit else None], len(everything)

    def image(self, user_id: str, image_id: str) -> Recorded | None:
        found = self._found(user_id, image_id)
        return found[0] if found else None

    def handled(self, source_keys: Collection[str], days: Collection[date]) -> set[str]:
        """Reads only the partitions that can hold an upload of ``days`` (``handling_days``)."""
        import polars as pl

        if not source_keys or not days:
            return set()
        needle = pl.col("source_key").is_in(sorted(source_keys))
        partitions = handling_days(min(days), max(days))
        return set().union(
            *(
                self.lake.scan(table, days=partitions, columns=["source_key"], filter=needle)
                .column("source_key")
                .to_pylist()
                for table in UPLOAD_TABLES
            )
        )

    def close(self) -> None:
        """Nothing: the lake holds no connection."""


def _recorded(kind: type[ImageRecord] | type[RejectRecord], table: pa.Table) -> list[Recorded]:
    records = cast(list[ImageRecord | RejectRecord], kind.from_arrow(table))
    days, waves = table.column("date").to_pylist(), table.column("wave").to_pylist()
    return [Recorded(record, day, wave) for record, day, wave in zip(records, days, waves, strict=True)]
