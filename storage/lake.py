"""The Parquet lake: one row per processed image and one per rejected upload, Hive-partitioned.

    <lake>/images/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet
    <lake>/rejects/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet

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
import pyarrow.parquet as pq

from graywave.storage.blobs import BlobStore, StoreBusy

Table = Literal["images", "rejects"]

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

SCHEMAS: dict[Table, pa.Schema] = {"images": IMAGES_SCHEMA, "rejects": REJECTS_SCHEMA}


class LakeBusy(StoreBusy):
    """Another wave holds the lake."""


PARTITIONS = pa.schema([pa.field("date", pa.date32()), pa.field("wave", pa.string())])
WRITER_LOCK = "_locks/writer"


class Lake:
    """The Parquet lake on a blob store."""

    def __init__(self, store: BlobStore):
        self.store = store
        self.url = store.url

    @staticmethod
    def partition_prefix(table: Table, day: date, wave: str) -> str:
        return f"{table}/date={day.isoformat()}/wave={wave}/"

    def append(self, table: Table, day: date, wave: str, rows: Sequence[dict[str, Any]]) -> str | None:
        """Write ``rows`` as one new Parquet file in the partition and return its key; none for no rows."""
        if not rows:
            return None
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(list(rows), schema=SCHEMAS[table]), buffer, compression="zstd")
        key = f"{self.partition_prefix(table, day, wave)}part-{uuid.uuid4().hex}.parquet"
        self.store.write(key, buffer.getvalue(), "application/vnd.apache.parquet")
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
        parts = []
        for key in self.files(table, days):
            part = pq.read_table(pa.BufferReader(self.store.read(key)), columns=schema.names, schema=schema)
            day, wave = _partition_values(key)
            part = part.append_column("date", pa.array([day] * part.num_rows, pa.date32()))
            parts.append(part.append_column("wave", pa.array([wave] * part.num_rows, pa.string())))
        full = pa.unify_schemas([schema, PARTITIONS])
        table_ = pa.concat_tables(parts) if parts else full.empty_table()
        return table_.select([name for name in (columns or full.names)])

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


def _partition_values(key: str) -> tuple[date, str]:
    _, day_part, wave_part, _ = key.split("/", 3)
    return date.fromisoformat(day_part.removeprefix("date=")), wave_part.removeprefix("wave=")
