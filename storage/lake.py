"""The lake: the waves' rows and the daily analytics as Delta Lake tables (``deltalake``, delta-rs).

    <lake>/images/                  one row per processed upload     partitioned by date
    <lake>/rejects/                 one row per rejected upload      partitioned by date
    <lake>/daily_user_histograms/   replaced per day by the analytics
    <lake>/daily_median/
    <lake>/similar_users/           replaced per day and metric

``date`` is the day of the wave that handled the upload (in GRAYWAVE_TIMEZONE); ``wave`` names it
(``api`` for what the API processed). Every write is one atomic Delta commit: readers see all of a
write or none of it, and read only the files that a commit references (a stray or half-written
file in a folder is never read). Concurrent writers need nothing but the store's atomic create (a
local folder's, S3's ``If-None-Match``): no lock object, no DynamoDB.

- ``record`` is an insert-only MERGE keyed on ``source_key``, whose predicate names the partitions
  that can hold those uploads: a row is inserted only where no row of that upload is, so recording
  the same upload twice (a rerun, a retry, two processes at once) leaves one row. A commit that
  loses a race to another writer of the same partitions is retried, with jittered back-off, until
  it lands.
- ``replace`` overwrites one day (and metric) of a daily table in one commit.
- ``delete`` removes rows by predicate; their bytes leave the lake's files once ``maintain`` has
  vacuumed the old files (``GRAYWAVE_LAKE_RETENTION_HOURS``).

Reads (``scan``, ``lookup``) read the committed files of the table's latest version with Polars:
delta-rs prunes the files by their partition and min/max statistics (kept in the Delta log), Polars
skips row groups by theirs. What a reader caches it keys on the table's version (``version``),
which every commit changes. ``as_of`` reads a table as it was.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from graywave.errors import BackendUnavailable, InvalidInput, NotFound
from graywave.records import ImageRecord, RejectRecord
from graywave.storage.blobs import BlobStore, LocalBlobStore

if TYPE_CHECKING:
    import polars as pl

Table = Literal["images", "rejects", "daily_user_histograms", "daily_median", "similar_users"]
TABLES: tuple[Table, ...] = ("images", "rejects", "daily_user_histograms", "daily_median", "similar_users")

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
"""What the writers give each table; the lake adds ``LAKE_COLUMNS``."""

_DATE = pa.field("date", pa.date32(), nullable=False)
_WAVE = pa.field("wave", pa.string(), nullable=False)
LAKE_COLUMNS: dict[Table, list[pa.Field]] = {
    "images": [_WAVE, _DATE],
    "rejects": [_WAVE, _DATE],
    "daily_user_histograms": [_DATE],
    "daily_median": [_DATE],
    "similar_users": [pa.field("metric", pa.string(), nullable=False), _DATE],
}
"""Columns the lake adds to each table's rows: the day (the partition column) and what wrote them."""


def table_schema(table: Table) -> pa.Schema:
    """A table's whole Arrow schema, as the lake stores and reads it (plain ``string`` columns)."""
    return pa.schema([*SCHEMAS[table], *LAKE_COLUMNS[table]])


PARTITION_BY = ["date"]
SORT_KEYS: dict[Table, list[tuple[str, str]]] = {
    "images": [("user_id", "ascending"), ("uploaded_at", "ascending")],
    "rejects": [("user_id", "ascending"), ("source_key", "ascending")],
}
"""Recorded rows are written sorted, so that the files' and row groups' statistics serve the
reads that filter by these (one user's images)."""
ROW_GROUP = 1024
"""Rows per Parquet row group: small enough that a filter on one user reads little of a file."""
Z_ORDER: dict[Table, list[str]] = {"images": ["user_id"], "rejects": ["user_id"]}
"""Columns that maintenance clusters each day's files by (``maintain``)."""
TARGET_FILE_BYTES = 32 * 1024 * 1024
"""Compaction's target file size: a day of 200,000 images is a few files."""
COMMIT_BACKOFF_S = 0.05
COMMIT_BACKOFF_MAX_S = 2.0
"""A commit that lost a race is retried after a random wait, doubling from ``COMMIT_BACKOFF_S`` up
to ``COMMIT_BACKOFF_MAX_S`` (so that two writers that collided do not collide again in step)."""
_RESULTS_CACHED = 4096

R = TypeVar("R")
AsOf = int | datetime | None
"""A table as of a version number or a time (None: its latest version)."""


@dataclass(frozen=True)
class CommitInfo:
    """What a commit records beside its rows (the Delta log's commit metadata): which operation,
    which wave of which day, which Prefect flow run. ``graywave lake history`` shows them."""

    operation: str
    day: date | None = None
    wave: str | None = None
    flow_run: str | None = None

    def metadata(self) -> dict[str, str]:
        values = {"operation": self.operation, "wave": self.wave, "day": self.day and self.day.isoformat()}
        values["flow_run"] = self.flow_run
        return {f"graywave.{name}": value for name, value in values.items() if value}


@dataclass(frozen=True)
class Commit:
    """One version of a table, as ``Lake.history`` lists it."""

    version: int
    timestamp: datetime
    operation: str
    graywave: dict[str, str]
    """The commit's graywave metadata (operation, wave, day, flow_run), without the prefix."""
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Maintenance:
    """What ``Lake.maintain`` did to one table."""

    table: Table
    files_before: int
    files_after: int
    files_vacuumed: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.table}: {self.files_before} -> {self.files_after} files, "
            f"{self.files_vacuumed} old files vacuumed, {self.seconds:.1f} s"
        )


def sql_literal(value: str | date) -> str:
    """``value`` as a SQL string literal for delta-rs's predicates (quotes doubled)."""
    text = value.isoformat() if isinstance(value, date) else value
    return "'" + text.replace("'", "''") + "'"


def _in(column: str, values: Iterable[str | date]) -> str:
    return f"{column} IN ({', '.join(sql_literal(value) for value in sorted(set(values)))})"


def _brought_up_to_date(current: Any, url: str) -> None:
    """``current`` (a ``DeltaTable``) at the table's latest commit; ``BackendUnavailable`` when the
    store cannot be reached or a new commit of the log cannot be read."""
    from deltalake.exceptions import DeltaError

    try:
        current.update_incremental()
    except (OSError, DeltaError) as error:
        raise BackendUnavailable(f"the lake at {url} could not be read: {error}") from error


def _is_conflict(error: BaseException) -> bool:
    from deltalake.exceptions import CommitFailedError

    return isinstance(error, CommitFailedError)


class Lake:
    """The Delta tables under the lake URL of a blob store (a local folder or ``s3://``)."""

    def __init__(self, store: BlobStore):
        self.store = store
        self.url = store.url
        self._arrow_fs: tuple[pafs.FileSystem, str] | None = None
        self._tables: dict[Table, Any] = {}
        """Each table's ``DeltaTable``, brought up to date (``update_incremental``) before a read."""
        self._locks = {table: threading.Lock() for table in TABLES}
        """``DeltaTable`` objects are not for two threads at once: one lock per table."""
        self._writers: dict[Table, Any] = {}
        """Each table's ``DeltaTable`` that commits go through (under ``_commits``): brought up to date
        before each commit, not opened again (a fresh open replays the log from its checkpoint)."""
        self._commits = {table: threading.Lock() for table in TABLES}
        """One commit at a time per table in this process. Not for correctness (a commit that loses
        a race, to another process, is retried): so that the API's own concurrent writes (uploads
        and deletes into today's partition) queue for a few ms instead of making each other fail
        and retry after back-off waits."""
        self._results: VersionCache[pa.Table] = VersionCache(_RESULTS_CACHED)
        """``lookup`` results (a few rows each): repeated reads of an image are free."""

    # --- where the tables are ---------------------------------------------------------------------

    def uri(self, table: Table) -> str:
        """The table's location as delta-rs (and Polars, DuckDB, Spark) names it."""
        location, _ = self.store.table_location(table)
        return location

    def storage_options(self) -> dict[str, str]:
        """delta-rs's storage options for this store (the S3 endpoint, region, credentials)."""
        _, options = self.store.table_location("")
        return options

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if self._arrow_fs is None:
            self._arrow_fs = self.store.arrow_filesystem()
        return self._arrow_fs

    def _open(self, table: Table) -> Any:
        """A new ``DeltaTable`` of ``table`` at its latest version; None when it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(self.uri(table), storage_options=self.storage_options() or None)
        except TableNotFoundError:
            return None
        except (OSError, DeltaError) as error:  # a store it cannot reach, a log it cannot read
            raise BackendUnavailable(f"the lake at {self.url} could not be read: {error}") from error

    def _latest(self, table: Table) -> Any:
        """The table's cached ``DeltaTable`` at its latest version (call holding the table's lock)."""
        current = self._tables.get(table)
        if current is None:
            current = self._open(table)
            if current is None:
                return None
            self._tables[table] = current
        else:
            _brought_up_to_date(current, self.url)
        return current

    def version(self, table: Table) -> int:
        """The table's latest version; -1 before its first commit. Every commit changes it."""
        with self._locks[table]:
            current = self._latest(table)
            return -1 if current is None else int(current.version())

    def versions(self, tables: Iterable[Table] = TABLES) -> tuple[int, ...]:
        """The versions of ``tables``: a cache key that every write to any of them changes."""
        return tuple(self.version(table) for table in tables)

    def check(self) -> None:
        """Raise ``BackendUnavailable`` when this machine cannot read the lake: its store cannot be
        reached (a bucket these credentials cannot read, a folder that is not there) or a table's log
        cannot be read. A local lake never written yet (no folder, in a parent folder that exists:
        the first write makes it) is readable, and empty."""
        store = self.store
        if isinstance(store, LocalBlobStore) and not store.root.exists() and store.root.parent.is_dir():
            return
        store.check()
        for table in TABLES:
            try:
                self.version(table)
            except Exception as error:
                raise BackendUnavailable(f"the lake table {table} at {self.url} cannot be read: {error}") from error

    # --- writes -----------------------------------------------------------------------------------

    def _rows(self, table: Table, data: pa.Table, **columns: object) -> pa.Table:
        """``data`` with the lake's columns set, cast to the table's schema (a wrong shape is refused
        before anything is written) and sorted for the reads."""
        rows = data
        for name, value in columns.items():
            if name in rows.column_names:
                rows = rows.drop_columns([name])
            field = table_schema(table).field(name)
            rows = rows.append_column(field, pa.array([value] * rows.num_rows, field.type))
        rows = rows.select(table_schema(table).names).cast(table_schema(table))
        if table in SORT_KEYS and rows.num_rows > 1:
            rows = rows.sort_by(SORT_KEYS[table])
        return rows

    def _create(self, table: Table) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            DeltaTable.create(
                self.uri(table),
                schema=table_schema(table),
                mode="ignore",
                partition_by=PARTITION_BY,
                name=table,
                storage_options=self.storage_options() or None,
            )
        except DeltaError:  # another writer created it between the look and the create
            if self._open(table) is None:
                raise

    def _committing(self, table: Table, commit: Callable[[Any], R]) -> R:
        """``commit(the table at its latest version)``, again on a fresh version after a commit that
        lost a race (with jittered, growing waits), until it lands: a write is never dropped."""
        wait = COMMIT_BACKOFF_S
        while True:
            with self._commits[table]:
                current = self._writer(table)
                if current is None:
                    self._create(table)
                    continue
                try:
                    return commit(current)
                except Exception as error:
                    self._writers.pop(table, None)  # opened afresh for the next try
                    if not _is_conflict(error):
                        raise
            time.sleep(random.uniform(0, wait))
            wait = min(2 * wait, COMMIT_BACKOFF_MAX_S)

    def _writer(self, table: Table) -> Any:
        """The table's ``DeltaTable`` for a commit, at its latest version (call holding ``_commits``);
        None when the table does not exist yet."""
        current = self._writers.get(table)
        if current is None:
            current = self._open(table)
        else:
            try:
                _brought_up_to_date(current, self.url)
            except BackendUnavailable:
                self._writers.pop(table, None)
                raise
        if current is not None:
            self._writers[table] = current
        return current

    @staticmethod
    def _properties(info: CommitInfo) -> Any:
        from deltalake import CommitProperties

        return CommitProperties(custom_metadata=info.metadata())

    @staticmethod
    def _writer_properties() -> Any:
        from deltalake import WriterProperties

        return WriterProperties(compression="ZSTD", max_row_group_size=ROW_GROUP)

    def _merge_by_source(
        self, table: Table, rows: pa.Table, days: Collection[date], info: CommitInfo, *, update: bool
    ) -> int:
        """One MERGE commit of ``rows`` keyed on ``source_key`` within the partitions of ``days``:
        insert where no row of that upload is, and (``update``) replace the row where one is.
        Returns the rows inserted or updated.

        The predicate also names the range of the rows' source keys as literals: a row that matches
        lies in it, and delta-rs then skips every file whose statistics lie outside it (it does not
        derive that range from the join by itself). An API write's MERGE opens one file, not every
        file of today's partition: 14 ms against 98 ms at 100 one-row files."""
        keys = pc.min_max(rows.column("source_key"))
        predicate = (
            f"t.source_key = s.source_key AND t.{_in('date', days)}"
            f" AND t.source_key BETWEEN {sql_literal(keys['min'].as_py())} AND {sql_literal(keys['max'].as_py())}"
        )

        def merge(current: Any) -> int:
            merger = current.merge(
                rows,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                writer_properties=self._writer_properties(),
                commit_properties=self._properties(info),
            )
            if update:
                merger = merger.when_matched_update_all()
            result = merger.when_not_matched_insert_all().execute()
            return int(result["num_target_rows_inserted"]) + int(result["num_target_rows_updated"])

        return self._committing(table, merge)

    def record(
        self, table: Table, data: pa.Table, *, day: date, wave: str, among: Collection[date], info: CommitInfo
    ) -> int:
        """Insert the rows of ``data`` (uploads' rows: ``images`` or ``rejects``) into the partition of
        ``day``, but only those whose ``source_key`` no partition of ``among`` holds yet (the days
        whose waves can handle these uploads): one insert-only MERGE commit. Returns the rows inserted.
        """
        if not data.num_rows:
            return 0
        rows = self._rows(table, data, wave=wave, date=day)
        return self._merge_by_source(table, rows, set(among) | {day}, info, update=False)

    def upsert(self, table: Table, data: pa.Table, *, wave: str, days: Collection[date], info: CommitInfo) -> int:
        """Write uploads' new rows (``data`` with its ``date`` column: the partition each goes to) in
        place of their rows in the partitions of ``days``: one MERGE commit that updates the rows it
        finds and inserts the rest. Returns the rows written."""
        if not data.num_rows:
            return 0
        rows = self._rows(table, data, wave=wave)
        days = set(days) | set(rows.column("date").to_pylist())
        return self._merge_by_source(table, rows, days, info, update=True)

    def replace(self, table: Table, data: pa.Table, *, day: date, info: CommitInfo, metric: str | None = None) -> None:
        """Make ``data`` the whole content of ``day`` (and ``metric``, for ``similar_users``) in
        ``table``: one overwrite commit whose predicate names that day (recomputed outputs)."""
        from deltalake import write_deltalake

        extra = {} if metric is None else {"metric": metric}
        rows = self._rows(table, data, date=day, **extra)
        predicate = f"date = {sql_literal(day)}" + ("" if metric is None else f" AND metric = {sql_literal(metric)}")

        def overwrite(current: Any) -> None:
            write_deltalake(
                current,
                rows,
                mode="overwrite",
                predicate=predicate,
                writer_properties=self._writer_properties(),
                commit_properties=self._properties(info),
            )

        self._committing(table, overwrite)

    def delete(
        self,
        table: Table,
        where: Mapping[str, Collection[str]],
        *,
        info: CommitInfo,
        days: Iterable[date] | None = None,
    ) -> int:
        """Delete the rows of ``table`` in which one of the columns of ``where`` holds one of its
        values (in the partitions of ``days`` only, when given): one commit, none when nothing
        matches. Returns the rows deleted."""
        terms = [_in(column, values) for column, values in where.items() if values]
        if not terms:
            return 0
        predicate = "(" + " OR ".join(terms) + ")"
        if days is not None:
            days = set(days)
            if not days:
                return 0
            predicate += f" AND {_in('date', days)}"
        if self._open(table) is None:
            return 0

        def delete(current: Any) -> int:
            result = current.delete(predicate, commit_properties=self._properties(info))
            return int(result.get("num_deleted_rows", 0))

        return self._committing(table, delete)

    # --- reads ------------------------------------------------------------------------------------

    def _pruned(self, current: Any, days: Sequence[date] | None, equal: Mapping[str, str]) -> list[str]:
        """The files of a ``DeltaTable``'s version that can hold rows of ``days`` whose columns equal
        ``equal``: by their partition and their min/max statistics (delta-rs prunes them)."""
        terms: list[tuple[str, str, Any]] = [(column, "=", value) for column, value in equal.items()]
        if days is not None:
            terms.append(("date", "in", [day.isoformat() for day in days]))
        return list(current.file_uris(file_pruning_predicate=terms or None))

    def _snapshot(
        self, table: Table, days: Sequence[date] | None, equal: Mapping[str, str], as_of: AsOf
    ) -> tuple[list[str], list[str]] | None:
        """The files to read (pruned) and the table's partition columns, at its latest version (or
        ``as_of``); None when the table does not exist (yet, or at that version)."""
        from deltalake.exceptions import DeltaError

        if as_of is None:
            with self._locks[table]:
                current = self._latest(table)
                if current is None:
                    return None
                return self._pruned(current, days, equal), list(current.metadata().partition_columns)
        current = self._open(table)
        if current is None:
            return None
        try:
            current.load_as_version(as_of)
        except (DeltaError, ValueError, OSError) as error:
            raise NotFound(f"{table} has no version {as_of} (graywave lake history lists them): {error}") from None
        return self._pruned(current, days, equal), list(current.metadata().partition_columns)

    def scan(
        self,
        table: Table,
        *,
        days: Iterable[date] | None = None,
        columns: Sequence[str] | None = None,
        equal: Mapping[str, str] | None = None,
        filter: pl.Expr | None = None,  # noqa: A002 - the name every dataframe library gives it
        as_of: AsOf = None,
    ) -> pa.Table:
        """Rows of ``table`` (all days, or only ``days``), as of its latest version or ``as_of`` (a
        version or a time), as an Arrow table of the table's schema.

        Only the files whose partition and statistics admit ``days`` and ``equal`` (column -> value)
        are opened; in them Polars skips the row groups that ``equal`` and ``filter`` (a Polars
        expression) rule out by their statistics. ``columns`` are the only ones read. Polars reads
        the ``string_view`` columns that delta-rs's MERGE and delete write (delta-rs #4579: pyarrow's
        filters cannot compare them) and never goes through delta-rs's Python file handler (delta-rs
        #2184: short-lived processes that do could abort at exit).
        """
        import polars as pl

        wanted = None if days is None else sorted(set(days))
        equal = dict(equal or {})
        schema = table_schema(table)
        names = list(schema.names if columns is None else columns)
        if wanted == []:
            return self._empty(table, names)
        found = self._snapshot(table, wanted, equal, as_of)
        if found is None or not found[0]:
            return self._empty(table, names)
        paths, partitions = found
        condition = pl.lit(True)
        for column, value in equal.items():
            condition &= pl.col(column) == value
        if wanted is not None:
            condition &= pl.col("date").is_in(wanted)
        if filter is not None:
            condition &= filter
        frame = pl.scan_parquet(
            paths,
            hive_partitioning=bool(partitions),
            hive_schema={name: pl.Date if name == "date" else pl.String for name in partitions} or None,
            missing_columns="insert",
            extra_columns="ignore",
            storage_options=self.store.table_location("")[1] or None,
        )
        try:
            rows = frame.filter(condition).select(names).collect().to_arrow()
        except (FileNotFoundError, pl.exceptions.ComputeError, OSError) as error:
            if as_of is not None:
                raise NotFound(
                    f"{table} as of {as_of} is no longer readable: its files were vacuumed"
                    " (GRAYWAVE_LAKE_RETENTION_HOURS)"
                ) from None
            raise BackendUnavailable(f"the lake at {self.url} could not be read: {error}") from error
        return rows.cast(pa.schema([schema.field(name) for name in names]))

    def read(self, table: Table, days: Iterable[date] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows of ``table`` (or of ``days``): ``scan`` with no filter."""
        return self.scan(table, days=days, columns=columns)

    def lookup(
        self,
        table: Table,
        column: str,
        value: str,
        *,
        columns: Sequence[str] | None = None,
        filter: pl.Expr | None = None,  # noqa: A002 - the name every dataframe library gives it
    ) -> pa.Table:
        """The rows of ``table`` whose ``column`` equals ``value`` (and that pass ``filter``): ``scan``
        with ``equal={column: value}``, kept until the table's next commit."""
        key = (
            table,
            column,
            value,
            None if filter is None else str(filter),
            None if columns is None else tuple(columns),
        )
        version = self.version(table)
        cached = self._results.get(key, version)
        if cached is not None:
            return cached
        found = self.scan(table, columns=columns, equal={column: value}, filter=filter)
        self._results.put(key, version, found)
        return found

    @staticmethod
    def _empty(table: Table, columns: Sequence[str]) -> pa.Table:
        return table_schema(table).empty_table().select(list(columns))

    def source_keys(self, table: Table, days: Iterable[date]) -> set[str]:
        return set(self.scan(table, days=days, columns=["source_key"]).column("source_key").to_pylist())

    def files(self, table: Table) -> list[str]:
        """The table's data files in its latest version, relative to the table's folder."""
        with self._locks[table]:
            current = self._latest(table)
            if current is None:
                return []
            return sorted(path for path in current.get_add_actions(flatten=True).column("path").to_pylist())

    # --- history and maintenance ------------------------------------------------------------------

    def history(self, table: Table, limit: int | None = None) -> list[Commit]:
        """The table's commits, newest first: version, time, operation and graywave's metadata."""
        current = self._open(table)
        if current is None:
            return []
        commits = []
        for entry in current.history(limit):
            ours = {key.removeprefix("graywave."): str(v) for key, v in entry.items() if key.startswith("graywave.")}
            commits.append(
                Commit(
                    version=int(entry.get("version", -1)),
                    timestamp=datetime.fromtimestamp(int(entry.get("timestamp", 0)) / 1000, UTC),
                    operation=str(entry.get("operation", "")),
                    graywave=ours,
                    metrics=dict(entry.get("operationMetrics") or {}),
                )
            )
        return commits

    def maintain(self, *, days: Iterable[date] | None, retention_hours: float, info: CommitInfo) -> list[Maintenance]:
        """Compact each table's partitions of ``days`` (all, when None), Z-order ``images`` and
        ``rejects`` by user there, write a checkpoint and vacuum the files that left the table more
        than ``retention_hours`` ago. Safe while waves and the API write: each step is a commit
        that is retried on a conflict, and vacuum removes only files no version within the retention
        needs."""
        done = []
        wanted = None if days is None else sorted(set(days))
        for table in TABLES:
            started = time.perf_counter()
            if self._open(table) is None:
                continue
            before = len(self.files(table))
            filters = None if wanted is None else [("date", "in", [day.isoformat() for day in wanted])]

            def optimize(current: Any, table: Table = table, filters: Any = filters) -> None:
                optimizer = current.optimize
                options = {
                    "partition_filters": filters,
                    "target_size": TARGET_FILE_BYTES,
                    "writer_properties": self._writer_properties(),
                    "commit_properties": self._properties(info),
                }
                if table in Z_ORDER:
                    optimizer.z_order(Z_ORDER[table], **options)
                else:
                    optimizer.compact(**options)

            self._committing(table, optimize)
            current = self._open(table)
            current.create_checkpoint()
            vacuumed = current.vacuum(
                retention_hours=int(retention_hours),
                enforce_retention_duration=False,
                dry_run=False,
                commit_properties=self._properties(info),
            )
            current.cleanup_metadata()
            after = len(self.files(table))
            done.append(Maintenance(table, before, after, len(vacuumed), time.perf_counter() - started))
        return done

    def migrate(self) -> list[Table]:
        """Convert a lake of hive-partitioned Parquet files (graywave before Delta Lake) into Delta
        tables, in place: each table's files become its first version (``convert_to_deltalake``,
        nothing rewritten); the old writer lock and generation token are removed. Returns the
        tables converted; a table that is a Delta table already is left as it is."""
        from deltalake import Schema as DeltaSchema
        from deltalake import convert_to_deltalake

        converted = []
        fs, base = self._filesystem()
        for table in TABLES:
            if self._open(table) is not None:
                continue
            listing = fs.get_file_info(pafs.FileSelector(f"{base}/{table}", recursive=True, allow_not_found=True))
            if not any(info.path.endswith(".parquet") for info in listing):
                continue
            old_paths = pa.schema([_DATE, *(f for f in LAKE_COLUMNS[table] if f.name != "date")])
            partitions = DeltaSchema.from_arrow(old_paths)  # the partition columns of the old paths
            convert_to_deltalake(
                self.uri(table),
                partition_by=partitions,
                partition_strategy="hive",
                name=table,
                storage_options=self.storage_options() or None,
                commit_properties=self._properties(CommitInfo("migrate")),
            )
            converted.append(table)
        for leftover in ("_generation", "_locks/writer.lock", "_locks/writer", "_locks/holder.json"):
            self.store.delete(leftover)
        return converted


V = TypeVar("V")


class VersionCache(Generic[V]):
    """A bounded cache (least recently used out) whose entries hold only under the table version
    (or tuple of versions) they were read under: the lake's lookups, the API's daily histograms."""

    def __init__(self, size: int):
        self._items: OrderedDict[Hashable, tuple[Hashable, V]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != version:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Hashable, version: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = (version, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def check_table(table: str) -> Table:
    """``table`` as a ``Table``; ``InvalidInput`` naming the tables otherwise."""
    if table not in TABLES:
        raise InvalidInput(f"unknown table {table!r}: one of {', '.join(TABLES)}")
    return table
