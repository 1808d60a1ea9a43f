"""The Parquet lake: the waves' rows and the daily analytics, Hive-partitioned.

    <lake>/images/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet     appended by waves
    <lake>/rejects/date=YYYY-MM-DD/wave=<wave>/part-<uuid>.parquet    appended by waves
    <lake>/daily_user_histograms/date=YYYY-MM-DD/data.parquet         replaced by the analytics
    <lake>/daily_median/date=YYYY-MM-DD/data.parquet
    <lake>/similar_users/date=YYYY-MM-DD/metric=<metric>/data.parquet

    <lake>/_generation                                                a token every write changes

``date`` is the day of the wave that handled the upload (in GRAYWAVE_TIMEZONE) and ``wave`` its
name; both live in the path only. The lake sits on a blob store (a local folder or S3), whose
writes are atomic, so readers never see a partial file.

Writes take Arrow tables (``append``, ``replace``) and go through the blob store. Reads go through
``pyarrow.dataset`` (``scan``): only the partitions asked for are listed, only the columns asked
for are read, and row filters are pushed down to the Parquet row groups. Files are written sorted
(images by user, rejects by key) in row groups of ``ROW_GROUP`` rows, so that a filter on
``user_id`` skips most of each file by its statistics; ``lookup`` opens only the files that hold
a value at all (``ValueIndex``). Every write changes ``_generation`` (to a "writing" mark
before, to a new token after): a reader that caches what it read (the API does) keys its cache on
``generation()``, caches nothing under a mark, and so never serves rows that a write (an append,
a rewrite, a deletion) has changed since, even when the writer was killed in the middle.
"""

from __future__ import annotations

import io
import json
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from threading import Lock
from typing import Generic, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random,
    wait_random_exponential,
)

from graywave.errors import BackendUnavailable, BlobNotFound, Busy, LakeBusy
from graywave.records import ImageRecord, RejectRecord
from graywave.storage.blobs import BlobStore, LocalBlobStore

Table = Literal["images", "rejects", "daily_user_histograms", "daily_median", "similar_users"]

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
    "images": ImageRecord.ARROW_SCHEMA,
    "rejects": RejectRecord.ARROW_SCHEMA,
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

SORT_KEYS: dict[Table, list[tuple[str, str]]] = {
    "images": [("user_id", "ascending"), ("uploaded_at", "ascending")],
    "rejects": [("source_key", "ascending")],
}
"""Appended files are sorted so that row-group statistics serve the reads that filter by these."""

READ_ATTEMPTS = 6
"""Reads of a lake whose files change under them, before it counts as unreadable."""
ROW_GROUP = 1024
"""Rows per row group of appended files: small enough that a filter on one user reads little."""

WRITER_LOCK = "_locks/writer"
HOLDER_NOTE = "_locks/holder.json"


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lake's writer lock: what (``wave morning of 2026-11-25``), which process, since when."""

    what: str
    process: str
    since: datetime | None


LOCK_RETRY_S = 0.05
LOCK_RETRY_MAX_S = 0.5
"""A writer waiting for the lake tries again within ``LOCK_RETRY_S``, then at random intervals (so
that waiting writers do not retry in step) doubling up to ``LOCK_RETRY_MAX_S``: a short holder is
followed within tens of ms, and a long wait on S3 costs a request or two every half second."""
GENERATION = "_generation"
_WRITING = "writing-"
_DATASETS_CACHED = 32
_RESULTS_CACHED = 4096


class Lake:
    """The Parquet lake on a blob store."""

    def __init__(self, store: BlobStore):
        self.store = store
        self.url = store.url
        self._lock = Lock()
        self._arrow_fs: tuple[pafs.FileSystem, str] | None = None
        self._indexes: dict[tuple[Table, str], ValueIndex] = {}
        self._datasets: GenerationCache[ds.Dataset] = GenerationCache(_DATASETS_CACHED)
        """Each table's (or partitions') files as a dataset: listed again only after a write."""
        self._results: GenerationCache[pa.Table] = GenerationCache(_RESULTS_CACHED)
        """``lookup`` results (a few rows each): repeated reads of an image are free."""

    @staticmethod
    def partition_prefix(table: Table, day: date, *values: str) -> str:
        """``<table>/date=<day>/<name>=<value>/...`` for the table's partition columns after ``date``."""
        names = PARTITIONS[table].names[1:]
        if len(values) != len(names):
            raise ValueError(f"{table} is partitioned by date and {names}, got {values}")
        parts = [f"date={day.isoformat()}", *(f"{name}={value}" for name, value in zip(names, values, strict=True))]
        return f"{table}/{'/'.join(parts)}/"

    # --- writes -----------------------------------------------------------------------------------

    def generation(self) -> str:
        """A token that every write to the lake changes (any table): equal settled tokens, equal content.

        While a write is under way the token says so (``settled`` is false): what a reader reads
        then must not be cached under it.
        """
        try:
            return self.store.read(GENERATION).decode()
        except BlobNotFound:
            return "0"

    def check(self) -> None:
        """Raise ``BackendUnavailable`` when this machine cannot read the lake: its store cannot be
        reached (a bucket these credentials cannot read, a folder that is not there) or its
        ``_generation`` cannot be read. A local lake never written yet (no folder, in a parent folder
        that exists: the first write makes it) is readable, and empty."""
        store = self.store
        if isinstance(store, LocalBlobStore) and not store.root.exists() and store.root.parent.is_dir():
            return
        store.check()
        self.generation()

    @staticmethod
    def settled(generation: str) -> bool:
        """False for the token of a write under way (or of a writer that died in the middle of one)."""
        return not generation.startswith(_WRITING)

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Mark the lake as being written, then give it a new settled generation once the write is
        over (done or failed). A writer killed in between leaves the mark: readers then cache
        nothing, and the next writer to take the lock settles it."""
        self.store.write(GENERATION, f"{_WRITING}{uuid.uuid4().hex}".encode(), "text/plain")
        try:
            yield
        finally:
            self.store.write(GENERATION, uuid.uuid4().hex.encode(), "text/plain")

    def _write(self, table: Table, key: str, data: pa.Table) -> None:
        data = data.cast(SCHEMAS[table])  # refuse a wrong shape before anything is written
        if table in SORT_KEYS and data.num_rows > 1:
            data = data.sort_by(SORT_KEYS[table])
        buffer = io.BytesIO()
        pq.write_table(data, buffer, compression="zstd", row_group_size=ROW_GROUP)
        self.store.write(key, buffer.getvalue(), "application/vnd.apache.parquet")

    def append(self, table: Table, data: pa.Table, *, day: date, wave: str) -> str | None:
        """Write ``data`` as one new Parquet file in the partition and return its key; none for no rows."""
        if not data.num_rows:
            return None
        key = f"{self.partition_prefix(table, day, wave)}part-{uuid.uuid4().hex}.parquet"
        with self._changing():
            self._write(table, key, data)
        return key

    def replace(self, table: Table, data: pa.Table, *, day: date, partition: Sequence[str] = ()) -> str:
        """Make ``data`` the whole content of a partition: one file, replaced atomically (recomputed outputs)."""
        key = f"{self.partition_prefix(table, day, *partition)}data.parquet"
        with self._changing():
            self._write(table, key, data)
        return key

    def remove_rows(
        self,
        table: Table,
        columns: Sequence[str],
        values: Iterable[str],
        *,
        days: Iterable[date] | None = None,
        keep: Collection[str] = (),
    ) -> int:
        """Rewrite the files of ``table`` without the rows whose ``columns`` hold one of ``values``.

        Only the files that hold such rows are touched (found by a pushed-down filter); each is
        replaced whole (atomically) or deleted when nothing is left. Files named in ``keep`` (keys
        that ``append`` returned) are left as they are. Returns the rows removed.
        """
        needle = pa.array(sorted(set(values)), pa.string())
        if not len(needle):
            return 0
        hit = ds.field(columns[0]).isin(needle)
        for column in columns[1:]:
            hit = hit | ds.field(column).isin(needle)
        dataset = self._dataset(table, days)
        files = set(dataset.to_table(columns=["__filename"], filter=hit).column("__filename").to_pylist())
        if not files:
            return 0
        _, base = self._filesystem()
        removed = 0
        with self._changing():
            for path in sorted(files):
                key = path[len(base) + 1 :]
                if key in keep:
                    continue
                data = pq.read_table(pa.BufferReader(self.store.read(key)), schema=SCHEMAS[table])
                kept = data.filter(~hit)
                removed += data.num_rows - kept.num_rows
                if kept.num_rows:
                    self._write(table, key, kept)
                else:
                    self.store.delete(key)
        return removed

    # --- reads ------------------------------------------------------------------------------------

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if self._arrow_fs is None:
            self._arrow_fs = self.store.arrow_filesystem()
        return self._arrow_fs

    def files(self, table: Table, days: Iterable[date] | None = None) -> list[str]:
        """The keys of the table's Parquet files (of ``days`` only, if given), listing only those partitions."""
        _, base = self._filesystem()
        return sorted(path[len(base) + 1 :] for path in self._paths(table, None if days is None else tuple(days)))

    def _listing(self, table: Table, days: tuple[date, ...] | None) -> list[pafs.FileInfo]:
        fs, base = self._filesystem()
        roots = (
            [f"{base}/{table}"]
            if days is None
            else [f"{base}/{table}/date={day.isoformat()}" for day in sorted(set(days))]
        )
        return sorted(
            (
                info
                for root in roots
                for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
                if info.type == pafs.FileType.File
                and info.path.endswith(".parquet")
                and not info.base_name.startswith((".", "_"))
            ),
            key=lambda info: info.path,
        )

    def _paths(self, table: Table, days: tuple[date, ...] | None) -> list[str]:
        return [info.path for info in self._listing(table, days)]

    def _files_dataset(self, table: Table, paths: list[str]) -> ds.Dataset:
        fs, base = self._filesystem()
        return ds.dataset(
            paths,
            schema=pa.unify_schemas([SCHEMAS[table], PARTITIONS[table]]),
            format="parquet",
            filesystem=fs,
            partitioning=ds.partitioning(PARTITIONS[table], flavor="hive"),
            partition_base_dir=f"{base}/{table}",
        )

    def _dataset(self, table: Table, days: Iterable[date] | None) -> ds.Dataset:
        """The table's files as a dataset, discovered again only when the lake's generation changed."""
        wanted = None if days is None else tuple(sorted(set(days)))
        generation = self.generation()
        dataset = self._datasets.get((table, wanted), generation)
        if dataset is None:
            dataset = self._files_dataset(table, self._paths(table, wanted))
            self._datasets.put((table, wanted), generation, dataset)
        return dataset

    def scan(
        self,
        table: Table,
        *,
        days: Iterable[date] | None = None,
        columns: Sequence[str] | None = None,
        filter: ds.Expression | None = None,  # noqa: A002 - pyarrow's own name for it
    ) -> pa.Table:
        """Rows of ``table`` (all days, or only ``days``), with its partition columns from the path.

        ``columns`` are the only ones read; ``filter`` (a ``pyarrow.dataset`` expression, e.g.
        ``ds.field("user_id") == "alice"``) is pushed down to the files' row groups.
        """
        days = None if days is None else tuple(days)
        return self._reading(lambda _: self._dataset(table, days).to_table(columns=columns, filter=filter))

    def index(self, table: Table, column: str) -> ValueIndex:
        """The lake's ``ValueIndex`` of ``table.column`` (made on first use, then kept up to date)."""
        with self._lock:
            index = self._indexes.get((table, column))
            if index is None:
                index = self._indexes[(table, column)] = ValueIndex(self, table, column)
            return index

    def lookup(
        self,
        table: Table,
        column: str,
        value: str,
        *,
        columns: Sequence[str] | None = None,
        filter: ds.Expression | None = None,  # noqa: A002 - pyarrow's own name for it
    ) -> pa.Table:
        """The rows of ``table`` whose ``column`` equals ``value`` (and that pass ``filter``).

        Only the files that hold ``value`` are opened (``ValueIndex``), and in them only the row
        groups whose statistics admit it: one user's rows out of millions, in milliseconds. The
        result is kept until the lake's generation changes.
        """
        index = self.index(table, column)
        wanted = ds.field(column) == value
        expression = wanted if filter is None else wanted & filter
        key = (table, column, value, str(filter), None if columns is None else tuple(columns))
        generation = self.generation()
        cached = self._results.get(key, generation)
        if cached is not None:
            return cached

        def read(again: bool) -> pa.Table:
            paths = index.files_with(value, generation, refresh=again)
            if not paths:
                return self._empty(table, columns)
            return self._files_dataset(table, paths).to_table(columns=columns, filter=expression)

        found = self._reading(read)
        self._results.put(key, generation, found)
        return found

    @staticmethod
    def _empty(table: Table, columns: Sequence[str] | None) -> pa.Table:
        empty = pa.unify_schemas([SCHEMAS[table], PARTITIONS[table]]).empty_table()
        return empty if columns is None else empty.select(list(columns))

    def _reading(self, read: Callable[[bool], pa.Table]) -> pa.Table:
        """``read(False)``; if a file changed under it (rewritten or removed since it was listed: a
        missing file, or bytes that no longer match the footer read), ``read(True)``, listing afresh,
        up to ``READ_ATTEMPTS`` times in all: writers that keep rewriting files (deletes and
        reprocessing while a wave records) can beat one retry. A store that still cannot be read is
        ``BackendUnavailable``."""
        attempts = Retrying(
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_random(0.01, 0.1),
            retry=retry_if_exception_type((OSError, pa.ArrowInvalid)),
            before_sleep=lambda _: self._datasets.clear(),
            reraise=True,
        )
        try:
            for attempt in attempts:
                with attempt:
                    return read(attempt.retry_state.attempt_number > 1)
        except (OSError, pa.ArrowInvalid) as error:
            raise BackendUnavailable(f"the lake at {self.url} could not be read: {error}") from error
        raise AssertionError("unreachable: tenacity either returns or raises")

    def read(self, table: Table, days: Iterable[date] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows of ``table`` (or of ``days``): ``scan`` with no filter."""
        return self.scan(table, days=days, columns=columns)

    def source_keys(self, table: Table, days: Iterable[date]) -> set[str]:
        return set(self.scan(table, days=days, columns=["source_key"]).column("source_key").to_pylist())

    @contextmanager
    def exclusive(self, ttl_s: float = 60.0, *, wait_s: float = 0.0, holder: str = "a writer") -> Iterator[None]:
        """Hold the lake for one writer (a wave, an API write); raise ``LakeBusy`` if another still
        holds it after ``wait_s`` seconds (at once by default).

        The other holder may be a short write (an API upload holds the lake for a few hundred ms,
        in this process or another): a writer that can wait that long is not refused for it.
        While it holds the lake, a note says who (``holder``, host and process) and since when
        (``Lake.holder``, for ``graywave status``).
        """
        attempts = Retrying(
            stop=stop_after_delay(wait_s),
            wait=wait_random_exponential(multiplier=LOCK_RETRY_S, max=LOCK_RETRY_MAX_S),
            retry=retry_if_exception_type(Busy),
            reraise=True,
        )
        with ExitStack() as stack:
            try:
                for attempt in attempts:
                    with attempt:
                        stack.enter_context(self.store.exclusive(WRITER_LOCK, ttl_s))
            except Busy as busy:
                raise LakeBusy(f"another wave is writing to the lake at {self.url} ({busy})") from None
            if not self.settled(self.generation()):  # a writer died in the middle of a write
                with self._changing():
                    pass
            note = LockHolder(holder, f"{socket.gethostname()}:{os.getpid()}", datetime.now(UTC))
            self.store.write(HOLDER_NOTE, json.dumps(asdict(note), default=str).encode(), "application/json")
            try:
                yield
            finally:
                self.store.delete(HOLDER_NOTE)

    def holder(self) -> LockHolder | None:
        """Who holds the lake now, and since when; None when nobody does. (It tries the lock for an
        instant to know: a writer that starts meanwhile waits that instant.)"""
        try:
            with self.store.exclusive(WRITER_LOCK, 5.0):
                return None
        except Busy:
            pass
        try:
            note = json.loads(self.store.read(HOLDER_NOTE))
            return LockHolder(note["what"], note["process"], datetime.fromisoformat(note["since"]))
        except (BlobNotFound, ValueError, KeyError):  # between the lock and its note
            return LockHolder("a writer", "unknown", None)


class ValueIndex:
    """Which files of one table hold a given value of one column (``user_id``, say).

    For each file it keeps the file's distinct values, sorted, as bytes: read once per version
    of the file (its size and time), refreshed when the lake's generation changes, and dropped
    with the file. Memory is about the size of that one column's distinct values; a lookup is a
    binary search per file. It is built on first use, not when the lake is opened.
    """

    def __init__(self, lake: Lake, table: Table, column: str):
        self.lake, self.table, self.column = lake, table, column
        self._generation: str | None = None
        self._files: dict[str, tuple[tuple[int, int | None], np.ndarray]] = {}
        self._lock = Lock()

    def _values(self, path: str) -> np.ndarray:
        fs, _ = self.lake._filesystem()
        column = pq.read_table(path, columns=[self.column], filesystem=fs).column(self.column)
        distinct = pc.unique(column.drop_null()).cast(pa.binary())
        return np.sort(np.asarray(distinct.to_numpy(zero_copy_only=False), dtype=np.bytes_))

    def _refresh(self, generation: str) -> None:
        """Read the new and changed files' values; ``generation`` was read before the listing."""
        listing = self.lake._listing(self.table, None)
        files = {}
        for info in listing:
            version = (info.size, info.mtime_ns)
            known = self._files.get(info.path)
            if known is None or known[0] != version:
                try:
                    known = (version, self._values(info.path))
                except FileNotFoundError:
                    continue  # removed since the listing: it holds nothing now
            files[info.path] = known
        self._files, self._generation = files, generation

    def _stale(self, generation: str) -> bool:
        return generation != self._generation or not self.lake.settled(generation)

    def refresh(self) -> None:
        """Bring the index up to the lake's current generation (reading only new or changed files)."""
        generation = self.lake.generation()
        with self._lock:
            if self._stale(generation):
                self._refresh(generation)

    def files_with(self, value: str, generation: str | None = None, refresh: bool = False) -> list[str]:
        """The files that hold ``value`` in the column, as of the lake's ``generation`` (read here
        unless the caller read it already: one read serves the caller's cache and this index)."""
        needle = np.bytes_(value.encode())
        generation = self.lake.generation() if generation is None else generation
        with self._lock:
            if refresh or self._stale(generation):
                self._refresh(generation)
            found = []
            for path, (_, values) in self._files.items():
                i = int(np.searchsorted(values, needle))
                if i < len(values) and values[i] == needle:
                    found.append(path)
            return found


V = TypeVar("V")


class GenerationCache(Generic[V]):
    """A bounded cache (least recently used out) whose entries hold only under the settled lake
    generation they were read under: the lake's datasets and lookups, the API's daily histograms."""

    def __init__(self, size: int):
        self._items: OrderedDict[Hashable, tuple[str, V]] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, key: Hashable, generation: str) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != generation or not Lake.settled(generation):
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Hashable, generation: str, value: V) -> None:
        with self._lock:
            self._items[key] = (generation, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
