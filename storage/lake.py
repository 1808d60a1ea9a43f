"""The Parquet lake: the waves' rows and the daily analytics, Hive-partitioned.

    <lake>/images/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet     appended by waves
    <lake>/rejects/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet    appended by waves
    <lake>/daily_user_histograms/date=YYYY-MM-DD/data.parquet         replaced by the analytics
    <lake>/daily_median/date=YYYY-MM-DD/data.parquet
    <lake>/similar_users/date=YYYY-MM-DD/metric=<metric>/data.parquet

``date`` is the day of the wave that handled the upload (in GRAYWAVE_TIMEZONE) and ``wave`` its
name; both live in the path only. The lake sits on a blob store (a local folder or S3), whose
writes are atomic, so readers never see a partial file.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import date
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from graywave.storage.blobs import BlobStore, StoreBusy

Table = Literal["images", "rejects", "daily_user_histograms", "daily_median", "similar_users"]

_UTC = pa.timestamp("us", tz="UTC")

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("upload_date", pa.date32(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("processed_key", pa.string(), nullable=False),
        pa.field("uploaded_at", _UTC, nullable=False),
        pa.field("processed_at", _UTC, nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("pixel_count", pa.int64(), nullable=False),
        pa.field("source_bytes", pa.int64(), nullable=False),
        pa.field("processed_bytes", pa.int64(), nullable=False),
        pa.field("histogram", pa.list_(pa.int64()), nullable=False),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("uploaded_at", _UTC, nullable=True),
        pa.field("seen_at", _UTC, nullable=False),
        pa.field("source_bytes", pa.int64(), nullable=True),
    ]
)

DAILY_USER_HISTOGRAMS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("images", pa.int64(), nullable=False),
        pa.field("pixels", pa.int64(), nullable=False),
        pa.field("counts", pa.list_(pa.int64()), nullable=False),
        pa.field("histogram", pa.list_(pa.float64()), nullable=False),
    ]
)

DAILY_MEDIAN_SCHEMA = pa.schema(
    [
        pa.field("users", pa.int64(), nullable=False),
        pa.field("histogram", pa.list_(pa.float64()), nullable=False),
    ]
)

SIMILAR_USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("neighbour_id", pa.string(), nullable=False),
        pa.field("distance", pa.float64(), nullable=False),
    ]
)

SCHEMAS: dict[Table, pa.Schema] = {
    "images": IMAGES_SCHEMA,
    "rejects": REJECTS_SCHEMA,
    "daily_user_histograms": DAILY_USER_HISTOGRAMS_SCHEMA,
    "daily_median": DAILY_MEDIAN_SCHEMA,
    "similar_users": SIMILAR_USERS_SCHEMA,
}

_DATE = pa.field("date", pa.date32())
PARTITIONS: dict[Table, pa.Schema] = {
    "images": pa.schema([_DATE, pa.field("wave", pa.string())]),
    "rejects": pa.schema([_DATE, pa.field("wave", pa.string())]),
    "daily_user_histograms": pa.schema([_DATE]),
    "daily_median": pa.schema([_DATE]),
    "similar_users": pa.schema([_DATE, pa.field("metric", pa.string())]),
}
"""Hive partition columns of each table, in path order; they live in the path only."""


class LakeBusy(StoreBusy):
    """Another wave holds the lake."""


WRITER_LOCK = "_locks/writer"


class Lake:
    """The Parquet lake on a blob store."""

    def __init__(self, store: BlobStore):
        self.store = store
        self.url = store.url

    @staticmethod
    def partition_prefix(table: Table, day: date, *values: str) -> str:
        """``<table>/date=<day>/<name>=<value>/...`` for the table's partition columns after ``date``."""
        names = PARTITIONS[table].names[1:]
        if len(values) != len(names):
            raise ValueError(f"{table} is partitioned by date and {names}, got {values}")
        parts = [f"date={day.isoformat()}", *(f"{name}={value}" for name, value in zip(names, values, strict=True))]
        return f"{table}/{'/'.join(parts)}/"

    def _write(self, key: str, data: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(data, buffer, compression="zstd")
        self.store.write(key, buffer.getvalue(), "application/vnd.apache.parquet")

    @staticmethod
    def _table(table: Table, rows: Sequence[dict[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(list(rows), schema=SCHEMAS[table])

    def append(self, table: Table, day: date, wave: str, rows: Sequence[dict[str, Any]]) -> str | None:
        """Write ``rows`` as one new Parquet file in the partition and return its key; none for no rows."""
        if not rows:
            return None
        key = f"{self.partition_prefix(table, day, wave)}part-{uuid.uuid4().hex}.parquet"
        self._write(key, self._table(table, rows))
        return key

    def replace(self, table: Table, day: date, *values: str, rows: Sequence[dict[str, Any]]) -> str:
        """Make ``rows`` the whole content of a partition: one file, replaced atomically (recomputed outputs)."""
        key = f"{self.partition_prefix(table, day, *values)}data.parquet"
        self._write(key, self._table(table, rows))
        return key

    def files(self, table: Table, days: Iterable[date] | None = None) -> list[str]:
        prefixes = [f"{table}/"] if days is None else [f"{table}/date={day.isoformat()}/" for day in days]
        return sorted(
            blob.key for prefix in prefixes for blob in self.store.list(prefix) if blob.key.endswith(".parquet")
        )

    def read(self, table: Table, days: Iterable[date] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of ``table`` (all days, or only ``days``) with ``date`` and ``wave`` from the path."""
        wanted = columns or SCHEMAS[table].names
        schema = pa.schema([SCHEMAS[table].field(name) for name in wanted if name in SCHEMAS[table].names])
        partitions = PARTITIONS[table]
        parts = []
        for key in self.files(table, days):
            part = pq.read_table(pa.BufferReader(self.store.read(key)), columns=schema.names, schema=schema)
            values = _partition_values(key)
            for field in partitions:
                value = date.fromisoformat(values[field.name]) if field.name == "date" else values[field.name]
                part = part.append_column(field, pa.array([value] * part.num_rows, field.type))
            parts.append(part)
        full = pa.unify_schemas([schema, partitions])
        table_ = pa.concat_tables(parts) if parts else full.empty_table()
        return table_.select([name for name in (columns or full.names)])

    def remove_rows(self, table: Table, columns: Sequence[str], values: set[str], days: Iterable[date] | None = None) -> int:
        """Rewrite the files of ``table`` without the rows whose ``columns`` hold one of ``values``.

        Each file is replaced whole (atomically) or deleted when nothing is left. Returns the rows removed.
        """
        removed = 0
        needle = pa.array(sorted(values), pa.string())
        for key in self.files(table, days):
            data = pq.read_table(pa.BufferReader(self.store.read(key)), schema=SCHEMAS[table])
            hit = pc.is_in(data.column(columns[0]), value_set=needle)
            for column in columns[1:]:
                hit = pc.or_(hit, pc.is_in(data.column(column), value_set=needle))
            count = pc.sum(hit).as_py() or 0
            if not count:
                continue
            removed += count
            kept = data.filter(pc.invert(hit))
            if kept.num_rows:
                self._write(key, kept)  # read with the table's schema: written back unchanged
            else:
                self.store.delete(key)
        return removed

    def source_keys(self, table: Table, days: Iterable[date]) -> set[str]:
        return set(self.read(table, days, columns=["source_key"]).column("source_key").to_pylist())

    @contextmanager
    def exclusive(self, ttl_s: float = 60.0) -> Iterator[None]:
        """Hold the lake for one writer (a wave); raise ``LakeBusy`` at once if another holds it."""
        with ExitStack() as stack:
            try:
                stack.enter_context(self.store.exclusive(WRITER_LOCK, ttl_s))
            except StoreBusy as busy:
                raise LakeBusy(f"another wave is writing to the lake at {self.url} ({busy})") from None
            yield


def _partition_values(key: str) -> dict[str, str]:
    """``{"date": "2026-11-25", "wave": "morning"}`` from ``images/date=2026-11-25/wave=morning/part.parquet``."""
    return dict(part.split("=", 1) for part in key.split("/")[1:-1])
