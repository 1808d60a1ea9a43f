"""The Parquet lake: one row per processed image and one per rejected upload, Hive-partitioned.

    <lake>/images/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet
    <lake>/rejects/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet

``date`` is the day of the wave that handled the upload (in GRAYWAVE_TIMEZONE) and ``wave`` its
name; both live in the path only. Files appear atomically (written under a dot-name, then renamed),
so readers never see a partial file: Polars, DuckDB and pyarrow skip dot-files.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Literal

import filelock
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

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


class LakeBusy(RuntimeError):
    """Another writer (a wave) holds the lake."""


class Lake:
    """A Parquet lake rooted at a local folder."""

    def __init__(self, url: str | Path):
        self.root = Path(str(url).removeprefix("file://")).resolve()
        self.url = str(self.root)

    def partition_dir(self, table: Table, day: date, wave: str) -> Path:
        return self.root / table / f"date={day.isoformat()}" / f"wave={wave}"

    def append(self, table: Table, day: date, wave: str, rows: Sequence[dict[str, Any]]) -> Path | None:
        """Write ``rows`` as one new Parquet file in the partition; nothing when there are none."""
        if not rows:
            return None
        data = pa.Table.from_pylist(list(rows), schema=SCHEMAS[table])
        directory = self.partition_dir(table, day, wave)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        temp = directory / f".{name}.tmp"
        pq.write_table(data, temp, compression="zstd")
        final = directory / name
        temp.rename(final)
        return final

    def _files(self, table: Table, days: Iterable[date] | None) -> list[str]:
        base = self.root / table
        dirs = [base] if days is None else [base / f"date={day.isoformat()}" for day in days]
        return sorted(str(p) for d in dirs if d.is_dir() for p in d.rglob("*.parquet") if not p.name.startswith("."))

    def read(self, table: Table, days: Iterable[date] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of ``table`` (all days, or only ``days``) with ``date`` and ``wave`` from the path."""
        files = self._files(table, days)
        schema = SCHEMAS[table].append(pa.field("date", pa.date32())).append(pa.field("wave", pa.string()))
        if not files:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        dataset = ds.dataset(
            files,
            format="parquet",
            schema=schema,
            partitioning=ds.partitioning(
                pa.schema([("date", pa.date32()), ("wave", pa.string())]), flavor="hive"
            ),
            partition_base_dir=str(self.root / table),
        )
        return dataset.to_table(columns=columns)

    def source_keys(self, table: Table, days: Iterable[date]) -> set[str]:
        return set(self.read(table, days, columns=["source_key"]).column("source_key").to_pylist())

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lake for one writer; raise ``LakeBusy`` at once if another holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.root / ".writer.lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise LakeBusy(f"another wave is writing to the lake at {self.root}") from None
        try:
            yield
        finally:
            lock.release()
