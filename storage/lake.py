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

Reads (``scan``, ``lookup``) read the committed files of the table's latest version (``as_of``: as it
was). A read of whole days is Polars' scan of the files that delta-rs prunes by partition and by the
min/max statistics kept in the Delta log. A selective read (``lookup``: one user's rows) reads only
the row groups that can hold the value, picked by the files' footers and membership filters of the
values, kept in memory per data file (``FooterCache``: Delta never rewrites a file). What a reader
caches of a table's rows it keys on the table's version (``version``), which every commit changes.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from graywave.errors import BackendUnavailable, InvalidInput, NotFound
from graywave.records import ImageRecord, RejectRecord
from graywave.storage.blobs import BlobStore, LocalBlobStore, refusal

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
OBJECT_STORE_MIN_BACKOFF_S = 0.1
"""object_store's (and Polars') least wait before a retry (``backoff_config.init_backoff``, 100 ms):
``_retries_within`` retries take at least the whole retry window."""


def _retries_within(retry_s: float) -> int:
    """A retry count that a window of ``retry_s`` seconds, not the count, ends: each retry waits at
    least ``OBJECT_STORE_MIN_BACKOFF_S``."""
    return max(10, int(retry_s / OBJECT_STORE_MIN_BACKOFF_S) + 1)


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


FOOTERS_CACHED_BYTES = 128 * 1024 * 1024
"""The memory, by estimate, that the footers kept for selective reads may take (``FooterCache``):
those of about 7,000 row groups of ``images`` (7 million rows at ``ROW_GROUP`` rows a group)."""
FOOTER_MEMORY_FACTOR = 8
"""pyarrow's parsed footer (``FileMetaData``) takes about 8 times its serialized size in memory
(measured on the lake bench's files: 7.2x for a flush's file of 8 row groups, 7.8x for a maintained
day's file of 65; about 1.1 KB a column chunk)."""


class Footer:
    """What a selective read keeps of one data file: its parsed Parquet footer (pyarrow reads the
    row groups it is given without reading and parsing the footer again), the file's size (a file
    written again at the same path is noticed), its columns and rows per row group, and, for each
    column that reads have looked a value up in, every row group's min/max (from the footer) and a
    membership filter of its values (``learn``)."""

    def __init__(self, metadata: Any, size: int):
        self.metadata = metadata
        self.size = size
        self.columns = frozenset(metadata.schema.to_arrow_schema().names)
        self.rows = tuple(int(metadata.row_group(group).num_rows) for group in range(metadata.num_row_groups))
        self.memory = FOOTER_MEMORY_FACTOR * int(metadata.serialized_size)
        """Its memory, by estimate."""
        self._leaves = {metadata.schema.column(leaf).path: leaf for leaf in range(metadata.num_columns)}
        self._bounds: dict[str, list[tuple[str, str] | None]] = {}
        self._members: dict[str, tuple[int, list[int]]] = {}
        """Per column: the filters' width in bits, and each row group's filter as an int."""

    def bounds(self, column: str) -> list[tuple[str, str] | None]:
        """Each row group's (min, max) of the string column ``column``; None where its statistics do
        not say (none written, a column that is not a string). Computed on first use."""
        found = self._bounds.get(column)
        if found is None:
            leaf = self._leaves.get(column)
            found = []
            for group in range(len(self.rows)):
                stats = None if leaf is None else self.metadata.row_group(group).column(leaf).statistics
                low, high = (stats.min, stats.max) if stats is not None and stats.has_min_max else (None, None)
                found.append((low, high) if isinstance(low, str) and isinstance(high, str) else None)
            self._bounds[column] = found
        return found

    def knows(self, column: str) -> bool:
        """Whether ``column``'s membership filters are built (``learn``)."""
        return column in self._members

    def learn(self, column: str, values: pl.Series) -> None:
        """Build ``column``'s membership filter of each row group from ``values``: the column's
        values in every row group, in order (a Bloom filter: ``MEMBERSHIP_BITS`` bits a row,
        ``MEMBERSHIP_PROBES`` bits set per value, about 1% false positives; no false negative)."""
        import numpy as np

        if column in self._members:  # another read built it meanwhile
            return
        width = 8 * -(-MEMBERSHIP_BITS * max(self.rows, default=1) // 8)
        group = np.repeat(np.arange(len(self.rows)), self.rows)
        bits = np.zeros((len(self.rows), width), np.bool_)
        for position in _bit_positions(_hashes(values), width):
            bits[group, position] = True
        packed = np.packbits(bits, axis=1, bitorder="little")
        self._members[column] = (width, [int.from_bytes(row.tobytes(), "little") for row in packed])
        self.memory += int(packed.nbytes) + 40 * len(self.rows)

    def admitting(self, equal: Mapping[str, str]) -> list[int]:
        """The row groups that may hold rows whose columns (of the file) equal ``equal``'s values:
        by their min/max, and by the membership filters of the columns that have them."""
        groups = [group for group, rows in enumerate(self.rows) if rows]
        for column, value in equal.items():
            bounds = self.bounds(column)
            groups = [g for g in groups if (b := bounds[g]) is None or b[0] <= value <= b[1]]
            if column in self._members and groups:
                width, filters = self._members[column]
                bits = _bit_positions(_hash(value), width)
                groups = [g for g in groups if all(filters[g] >> bit & 1 for bit in bits)]
        return groups


MEMBERSHIP_BITS = 10
MEMBERSHIP_PROBES = 5
"""A row group's membership filter of a column: ``MEMBERSHIP_BITS`` bits a row (1.25 bytes), of which
each value sets ``MEMBERSHIP_PROBES``: about 1% of the row groups that lack a value are read all the
same."""


def _hashes(values: pl.Series) -> Any:
    """64-bit hashes of string values (numpy uint64): Polars' hash, stable within a process, which is
    all the filters need."""
    import polars as pl

    return values.cast(pl.String).hash(seed=0).to_numpy()


@functools.lru_cache(maxsize=1024)
def _hash(value: str) -> int:
    """``_hashes`` of one value (each file of a read asks for it)."""
    import polars as pl

    return int(_hashes(pl.Series([value], dtype=pl.String))[0])


def _bit_positions(hashes: Any, width: int) -> list[Any]:
    """The ``MEMBERSHIP_PROBES`` bit positions (in ``0 .. width - 1``) of each hash (numpy arrays
    of hashes, or one as an int), by double hashing on the low and high halves of the hash."""
    low = hashes & 0xFFFFFFFF
    high = (hashes >> 32) | 1
    return [(low + k * high) % width for k in range(MEMBERSHIP_PROBES)]


def read_footer(source: Any) -> Footer:
    """The footer of the Parquet file open at ``source`` (a pyarrow ``NativeFile``)."""
    import pyarrow.parquet as pq

    return Footer(pq.read_metadata(source), int(source.size()))


class FooterCache:
    """Data files' footers (``Footer``) by path, the least recently used out beyond ``budget`` bytes
    (by ``Footer.memory``). A Delta data file is never rewritten (its name carries a UUID), so its
    footer holds for as long as the file exists; a read checks the file's size all the same.

    A lookup by user reads every file of a table (each file holds users from the whole range), so
    the budget must hold the footers of a table's current files for lookups to find them here: past
    it, each lookup reads the footers again, as Polars does (``FOOTERS_CACHED_BYTES``)."""

    def __init__(self, budget: int):
        self._items: OrderedDict[str, tuple[Footer, int]] = OrderedDict()
        """Each footer, with its memory when it was put."""
        self._budget = budget
        self._memory = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> Footer | None:
        with self._lock:
            item = self._items.get(path)
            if item is None:
                return None
            self._items.move_to_end(path)
            return item[0]

    def put(self, path: str, footer: Footer) -> None:
        """Keep ``footer`` (again, when it has grown: its memory is counted anew)."""
        with self._lock:
            old = self._items.pop(path, None)
            self._memory -= 0 if old is None else old[1]
            self._items[path] = (footer, footer.memory)
            self._memory += footer.memory
            while self._memory > self._budget and len(self._items) > 1:
                _, (_, memory) = self._items.popitem(last=False)
                self._memory -= memory

    def drop(self, path: str) -> None:
        with self._lock:
            item = self._items.pop(path, None)
            self._memory -= 0 if item is None else item[1]

    @property
    def memory(self) -> int:
        """The footers' memory, by estimate."""
        return self._memory

    def __len__(self) -> int:
        return len(self._items)


def _file_path(uri: str) -> str:
    """A data file's path as pyarrow's filesystem for the store (and Polars, for a local lake) names
    it: delta-rs's ``file_uris`` percent-encode it (a lake folder ``my lake`` is ``my%20lake``
    there) and name S3 objects ``s3://bucket/key``."""
    scheme, separator, rest = uri.partition("://")
    return unquote(rest if separator and scheme.isalnum() else uri)


def _partition_values(path: str, partitions: Sequence[str]) -> dict[str, str | None]:
    """The hive partition values in a data file's path (``.../date=2026-11-25/part-....parquet``),
    as Polars' ``hive_partitioning`` reads them: the nearest folder of each name, percent-decoded;
    null when missing or ``__HIVE_DEFAULT_PARTITION__``."""
    values: dict[str, str | None] = dict.fromkeys(partitions)
    seen: set[str] = set()
    for folder in reversed(path.split("/")[:-1]):
        name, separator, value = folder.partition("=")
        if separator and name in values and name not in seen:
            seen.add(name)
            values[name] = None if value == "__HIVE_DEFAULT_PARTITION__" else unquote(value)
    return values


def _names_its_columns(expression: pl.Expr) -> bool:
    """Whether a Polars expression's leaves are all single named columns or literals: no selector,
    wildcard or ``pl.len()``, whose columns a read could not know from ``meta.root_names()``."""
    import polars as pl

    try:
        children = expression.meta.pop()
        if not children:
            return bool(expression.meta.is_column() or expression.meta.is_literal())
        return all(_names_its_columns(child) for child in children)
    except pl.exceptions.PolarsError:  # an expression that Polars cannot take apart: read it the general way
        return False


def _condition(equal: Mapping[str, str], days: list[date] | None, row_filter: pl.Expr | None) -> pl.Expr:
    """The rows of a read (``Lake.scan``): ``equal``'s values, on ``days``, and ``row_filter``."""
    import polars as pl

    condition = pl.lit(True)
    for column, value in equal.items():
        condition &= pl.col(column) == value
    if days is not None:
        condition &= pl.col("date").is_in(days)
    if row_filter is not None:
        condition &= row_filter
    return condition


def _selective(schema: pa.Schema, equal: Mapping[str, str], condition: pl.Expr) -> bool:
    """Whether a read goes by row groups (``Lake._read_row_groups``): ``equal`` names string columns
    of the table, and ``condition`` names the table's columns only."""
    if not equal or any(name not in schema.names or schema.field(name).type != pa.string() for name in equal):
        return False
    return _names_its_columns(condition) and set(condition.meta.root_names()) <= set(schema.names)


def _equalities(expression: pl.Expr) -> dict[str, Any]:
    """The ``pl.col(name) == "value"`` terms (string values) that ``expression`` ANDs: every row it
    keeps holds those values, so row groups that cannot hold one need not be read."""
    import polars as pl

    children = expression.meta.pop()
    if len(children) != 2:
        return {}
    a, b = children
    if expression.meta.eq(a & b) or expression.meta.eq(b & a):
        return {**_equalities(a), **_equalities(b)}
    for column, literal in ((a, b), (b, a)):
        if not (column.meta.is_column() and literal.meta.is_literal()):
            continue
        if expression.meta.eq(column == literal) or expression.meta.eq(literal == column):
            value = pl.select(literal).item()
            return {column.meta.output_name(): value} if isinstance(value, str) else {}
    return {}


def _admitted(footer: Footer, values: Mapping[str, str | None], equal: Mapping[str, str]) -> list[int]:
    """The row groups of a file that may hold rows matching ``equal``: none when the file's partition
    value of one of its columns differs, or the file lacks one of them (null there); otherwise those
    that the min/max and the membership filters admit (``Footer.admitting``)."""
    in_file = {}
    for column, value in equal.items():
        if column in values:
            if values[column] != value:
                return []
        elif column not in footer.columns:
            return []
        else:
            in_file[column] = value
    return footer.admitting(in_file)


@dataclass(frozen=True)
class _Candidate:
    """A data file that a selective read opens: its footer, partition values, and the row groups
    that may hold matching rows."""

    path: str
    footer: Footer
    values: dict[str, str | None]
    groups: list[int]


class _ChangedFile(Exception):
    """A data file whose size is not its kept footer's: written again at the same path (not by
    Delta, whose file names carry a UUID)."""


def _equal_mask(read: pa.Table, equal: Mapping[str, str]) -> pa.ChunkedArray | None:
    """Which rows of ``read`` have columns equal to ``equal``'s values (those of its columns that it
    holds; None when it holds none: every row). Compared as ``string``: pyarrow cannot compare
    ``string_view`` with ``string`` (delta-rs #4579)."""
    mask = None
    for column, value in equal.items():
        if column in read.column_names:
            hit = pc.equal(read.column(column).cast(pa.string()), pa.scalar(value, pa.string()))
            mask = hit if mask is None else pc.and_(mask, hit)
    return None if mask is None else pc.fill_null(mask, False)


def _shaped(
    read: pa.Table,
    mask: pa.ChunkedArray | None,
    columns: Sequence[str],
    schema: pa.Schema,
    values: Mapping[str, str | None],
) -> pa.Table:
    """The rows of ``read`` (a file's) that ``mask`` keeps (all when None), with exactly ``columns``
    of the table's types: the partition columns from the path's values, null columns for those the
    file lacks (as Polars' ``missing_columns="insert"``). Cast before the rows are taken: pyarrow
    cannot take from ``string_view`` columns."""
    present = [name for name in columns if name not in values and name in read.column_names]
    kept = pa.table([read.column(name).cast(schema.field(name).type) for name in present], names=present)
    if mask is not None:
        kept = kept.filter(mask)
    rows = read.num_rows if mask is None else int(pc.sum(mask).as_py() or 0)
    arrays = []
    for name in columns:
        kind = schema.field(name).type
        if name in values:
            arrays.append(pa.repeat(pa.scalar(values[name], pa.string()).cast(kind), rows))
        elif name in present:
            arrays.append(kept.column(name))
        else:
            arrays.append(pa.nulls(rows, kind))
    return pa.table(arrays, names=list(columns))


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
        self._footers = FooterCache(FOOTERS_CACHED_BYTES)
        """The data files' footers, for selective reads (``_read_row_groups``)."""

    # --- where the tables are ---------------------------------------------------------------------

    def uri(self, table: Table) -> str:
        """The table's location as delta-rs (and Polars, DuckDB, Spark) names it."""
        location, _ = self.store.table_location(table)
        return location

    def storage_options(self) -> dict[str, Any]:
        """This store's options for Polars (``scan_delta``, ``read_delta``, ``scan_parquet``): the S3
        endpoint, region and credentials, and the retry window (``GRAYWAVE_BACKEND_RETRY_S``) in the
        keys and types Polars reads (``max_retries``, ``retry_timeout_ms``: integers). Polars passes
        the others on to delta-rs, whose own retry count it cannot be given (it drops its own keys,
        ``max_retries`` included): ``delta_options`` are delta-rs's."""
        options: dict[str, Any] = dict(self.delta_options())
        retry_s = getattr(self.store, "retry_s", None)
        if retry_s is None:  # a local folder: no requests to retry
            return options
        return options | {"max_retries": _retries_within(retry_s), "retry_timeout_ms": round(retry_s * 1000)}

    def delta_options(self) -> dict[str, str]:
        """delta-rs's storage options for this store (strings): the S3 endpoint, region and
        credentials, retrying a request for as long as the store's retry window: object_store
        stopped at its default count, 10 retries, which a refused connection (a store restarting)
        used up in about 2 s, whatever its ``retry_timeout``."""
        _, options = self.store.table_location("")
        retry_s = getattr(self.store, "retry_s", None)
        if retry_s is None:
            return options
        return options | {"max_retries": str(_retries_within(retry_s)), "retry_timeout": f"{retry_s:g}s"}

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if self._arrow_fs is None:
            self._arrow_fs = self.store.arrow_filesystem()
        return self._arrow_fs

    def _open(self, table: Table) -> Any:
        """A new ``DeltaTable`` of ``table`` at its latest version; None when it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(self.uri(table), storage_options=self.delta_options() or None)
        except TableNotFoundError:
            return None
        except (OSError, DeltaError) as error:  # a store it cannot reach, a log it cannot read
            raise BackendUnavailable(f"the lake at {self.url} could not be read: {error}") from error

    def _kept(self, kept: dict[Table, Any], table: Table) -> Any:
        """``table``'s ``DeltaTable`` kept in ``kept``, brought up to its latest version (opened the
        first time, and again after a failed update); None when the table does not exist yet."""
        current = kept.get(table)
        if current is None:
            current = self._open(table)
        else:
            try:
                _brought_up_to_date(current, self.url)
            except BackendUnavailable:
                kept.pop(table, None)
                raise
        if current is not None:
            kept[table] = current
        return current

    def _latest(self, table: Table) -> Any:
        """The table's cached ``DeltaTable`` for reads at its latest version (call holding the
        table's lock)."""
        return self._kept(self._tables, table)

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
                storage_options=self.delta_options() or None,
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
                    refused = refusal(error)
                    if refused is not None:  # a read-only or full store: unavailable, not a bug
                        raise BackendUnavailable(
                            f"the lake at {self.url} could not be written: {refused}: {error}"
                        ) from error
                    if not _is_conflict(error):
                        raise
            time.sleep(random.uniform(0, wait))
            wait = min(2 * wait, COMMIT_BACKOFF_MAX_S)

    def _writer(self, table: Table) -> Any:
        """The table's ``DeltaTable`` for a commit, at its latest version (call holding ``_commits``);
        None when the table does not exist yet."""
        return self._kept(self._writers, table)

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
    ) -> tuple[list[str], list[str], int] | None:
        """The files to read (pruned), the table's partition columns and the version read: its
        latest (or ``as_of``); None when the table does not exist (yet, or at that version)."""
        from deltalake.exceptions import DeltaError

        if as_of is None:
            with self._locks[table]:
                current = self._latest(table)
                if current is None:
                    return None
                partitions = list(current.metadata().partition_columns)
                return self._pruned(current, days, equal), partitions, int(current.version())
        current = self._open(table)
        if current is None:
            return None
        try:
            current.load_as_version(as_of)
        except (DeltaError, ValueError, OSError) as error:
            raise NotFound(f"{table} has no version {as_of} (graywave lake history lists them): {error}") from None
        partitions = list(current.metadata().partition_columns)
        return self._pruned(current, days, equal), partitions, int(current.version())

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
        are opened (delta-rs prunes them by the Delta log). ``columns`` are the only ones returned.
        ``filter`` is a Polars expression of the row's columns (a row predicate: no aggregation).
        Two kinds of read, by what the read is:

        - a selective read (``equal`` on string columns, the latest version: every ``lookup``) reads
          only the row groups that hold matching rows, with footers kept in memory
          (``_read_row_groups``);
        - every other read (whole days, ``as_of``) is Polars' scan of the pruned files
          (``_read_files``).

        Both filter with Polars, which compares the ``string_view`` columns that delta-rs's MERGE
        and delete write (delta-rs #4579: pyarrow's filters cannot), and neither goes through
        delta-rs's Python file handler (delta-rs #2184: short-lived processes that do could abort at
        exit).
        """
        return self._scan(table, days, columns, equal, filter, as_of)

    def _scan(
        self,
        table: Table,
        days: Iterable[date] | None,
        columns: Sequence[str] | None,
        equal: Mapping[str, str] | None,
        filter: pl.Expr | None,  # noqa: A002 - the name every dataframe library gives it
        as_of: AsOf,
        kept_as: Hashable | None = None,
    ) -> pa.Table:
        """``scan``; with ``kept_as``, its result is kept under that key until the table's next
        commit (``lookup``), the version known from the same look at the log as the read."""
        import polars as pl

        wanted = None if days is None else sorted(set(days))
        equal = dict(equal or {})
        schema = table_schema(table)
        names = list(schema.names if columns is None else columns)
        if wanted == []:
            return self._empty(table, names)
        condition = _condition(equal, wanted, filter)
        selective = as_of is None and _selective(schema, equal, condition)
        # A selective read prunes files by their kept footers: delta-rs's pruning by the log's
        # statistics costs more (3.8 ms against 0.3 for 300 files) and, by user, prunes nothing.
        found = self._snapshot(table, wanted, {} if selective else equal, as_of)
        if found is None or not found[0]:
            return self._empty(table, names)
        uris, partitions, version = found
        if kept_as is not None and (kept := self._results.get(kept_as, version)) is not None:
            return kept
        try:
            rows = self._read(table, uris, partitions, names, condition, selective=selective)
        except (pl.exceptions.ComputeError, OSError, pa.ArrowInvalid) as error:  # FileNotFoundError included
            if as_of is not None:
                raise NotFound(
                    f"{table} as of {as_of} is no longer readable: its files were vacuumed"
                    " (GRAYWAVE_LAKE_RETENTION_HOURS)"
                ) from None
            raise BackendUnavailable(f"the lake at {self.url} could not be read: {error}") from error
        rows = rows.cast(pa.schema([schema.field(name) for name in names]))
        if kept_as is not None:
            self._results.put(kept_as, version, rows)
        return rows

    def _read(
        self,
        table: Table,
        uris: list[str],
        partitions: list[str],
        names: list[str],
        condition: pl.Expr,
        *,
        selective: bool,
    ) -> pa.Table:
        """``condition``'s rows of the files ``uris``: a selective read's row groups (``scan``), or,
        for every other read and a selective one whose file changed, Polars' scan of the files."""
        if selective:
            try:
                return self._read_row_groups(table, uris, partitions, names, condition)
            except _ChangedFile as changed:  # its footer is dropped, and Polars reads this one
                self._footers.drop(str(changed))
        return self._read_files(uris, partitions, names, condition)

    def _read_files(self, uris: list[str], partitions: list[str], names: list[str], condition: pl.Expr) -> pa.Table:
        """Polars' scan of whole files: ``condition``'s rows, ``names``' columns. Polars reads each
        file's footer and skips the row groups whose statistics rule ``condition`` out; it adds the
        hive partition columns from the paths and null columns for those a file lacks (an older
        file of a table that gained a column)."""
        import polars as pl

        local = isinstance(self.store, LocalBlobStore)
        frame = pl.scan_parquet(
            [_file_path(uri) for uri in uris] if local else uris,
            hive_partitioning=bool(partitions),
            hive_schema={name: pl.Date if name == "date" else pl.String for name in partitions} or None,
            missing_columns="insert",
            extra_columns="ignore",
            glob=False,
            storage_options=self.storage_options() or None,
        )
        return frame.filter(condition).select(names).collect().to_arrow()

    def _read_row_groups(
        self,
        table: Table,
        uris: list[str],
        partitions: list[str],
        names: list[str],
        condition: pl.Expr,
    ) -> pa.Table:
        """A selective read: ``condition``'s rows, ``names``' columns, reading only the row groups
        that can hold such rows.

        Why not Polars over the files: a lookup by user prunes no file (every day's file holds users
        from the whole range), and Polars reads and parses each file's footer again at each read
        (about 1 ms a file: 30 ms for a month of maintained days). Delta's files are never rewritten
        (their names carry a UUID), so what a read needs of them is kept (``FooterCache``), and:

        1. the values that ``condition`` requires of string columns (its ``column == "value"``
           terms: ``equal``'s, and a ``filter``'s such as a GET's image id) pick, per file, the row
           groups that can hold them: by the footer's min/max and by membership filters of the
           values (``Footer.learn``: built from the column, read whole once, at the first read by
           it in the file). A file with none is not opened;
        2. when ``condition`` names other columns too, those columns of these row groups, and
           ``condition`` on the rows: the row groups that hold a match;
        3. the columns of ``names`` of those row groups, filtered by ``condition``.

        The hive partition columns come from the paths and a column that a file lacks is null, as in
        ``_read_files``. The three steps stay in one function (past 50 lines with this docstring):
        each hands the next its candidates and row groups, which split functions would pass around.
        """
        import polars as pl

        schema = table_schema(table)
        required = {
            name: value
            for name, value in _equalities(condition).items()
            if name in schema.names and schema.field(name).type == pa.string()
        }
        probed = list(dict.fromkeys(condition.meta.root_names()))
        needed = list(dict.fromkeys([*names, *probed]))
        candidates = self._candidates(uris, partitions, required)
        if not set(probed) <= {*required, *partitions}:
            probes = []
            for index, candidate in enumerate(candidates):
                probe = self._matching_rows(candidate, candidate.groups, probed, schema, required, tagged=True)
                probes.append(probe.append_column("__file", pa.repeat(pa.scalar(index, pa.int32()), probe.num_rows)))
            matched = pl.from_arrow(pa.concat_tables(probes)) if probes else None
            assert matched is None or isinstance(matched, pl.DataFrame)
            matched = None if matched is None else matched.filter(condition)
            if matched is None or not matched.height:
                return schema.empty_table().select(names)
            if set(needed) <= set(probed):  # the probe read every column needed
                return matched.select(names).to_arrow()
            hits: dict[int, list[int]] = {}
            for index, group in matched.select("__file", "__group").unique().sort("__file", "__group").iter_rows():
                hits.setdefault(index, []).append(group)
            candidates = [replace(candidates[index], groups=groups) for index, groups in hits.items()]
        pieces = [
            self._matching_rows(candidate, candidate.groups, needed, schema, required) for candidate in candidates
        ]
        if not pieces:
            return schema.empty_table().select(names)
        found = pl.from_arrow(pa.concat_tables(pieces))
        assert isinstance(found, pl.DataFrame)
        return found.filter(condition).select(names).to_arrow()

    def _candidates(self, uris: list[str], partitions: list[str], equal: Mapping[str, str]) -> list[_Candidate]:
        """The files of ``uris`` with row groups that may hold ``equal``'s values (``_admitted``).
        A file is opened only when its footer is not kept yet (then read, once), and its columns of
        ``equal`` are read whole when their membership filters are not built yet (``_learn``)."""
        fs, _ = self._filesystem()
        found = []
        for uri in uris:
            path = _file_path(uri)
            values = _partition_values(path, partitions)
            if any(name in values and values[name] != value for name, value in equal.items()):
                continue  # another partition
            footer = self._footer(fs, path)
            groups = _admitted(footer, values, equal)
            if groups and self._knowing(uri, footer, [name for name in equal if name not in values]):
                groups = _admitted(footer, values, equal)
            if groups:
                found.append(_Candidate(path, footer, values, groups))
        return found

    def _footer(self, fs: pafs.FileSystem, path: str) -> Footer:
        """A data file's footer: the kept one, else read (once) and kept."""
        footer = self._footers.get(path)
        if footer is None:
            with fs.open_input_file(path) as source:
                footer = read_footer(source)
            self._footers.put(path, footer)
        return footer

    def _knowing(self, uri: str, footer: Footer, columns: Sequence[str]) -> bool:
        """Build the membership filters of those of ``columns`` the file holds and has none of yet
        (``_learn``); whether it built any."""
        unknown = [name for name in columns if name in footer.columns and not footer.knows(name)]
        if not unknown:
            return False
        self._learn(uri, footer, unknown)
        self._footers.put(_file_path(uri), footer)  # counted again, with its filters
        return True

    def prepare_lookups(self, table: Table, columns: Sequence[str]) -> int:
        """Read every current data file's footer of ``table`` now (and, for ``columns``, build its
        membership filters, which reads those columns whole), so that the first lookups (``lookup``)
        do not pay for it. The API's start-up reads the footers only: no scan of the data. Returns
        the files prepared."""
        found = self._snapshot(table, None, {}, None)
        if found is None:
            return 0
        fs, _ = self._filesystem()
        for uri in found[0]:
            self._knowing(uri, self._footer(fs, _file_path(uri)), columns)
        return len(found[0])

    def _learn(self, uri: str, footer: Footer, columns: list[str]) -> None:
        """Build the membership filters of ``columns`` in a file (``Footer.learn``), from the columns
        read whole: with Polars, which reads a column of many row groups about twice as fast as
        pyarrow (3.9 ms against 7.5 for 65 row groups)."""
        import polars as pl

        local = isinstance(self.store, LocalBlobStore)
        whole = (
            pl.scan_parquet(
                _file_path(uri) if local else uri,
                hive_partitioning=False,
                glob=False,
                storage_options=self.storage_options() or None,
            )
            .select(columns)
            .collect()
        )
        if whole.height != sum(footer.rows):
            raise _ChangedFile(_file_path(uri))
        for name in columns:
            footer.learn(name, whole.get_column(name))

    def _matching_rows(
        self,
        candidate: _Candidate,
        groups: list[int],
        columns: list[str],
        schema: pa.Schema,
        equal: Mapping[str, str],
        *,
        tagged: bool = False,
    ) -> pa.Table:
        """The rows of a file's row groups ``groups`` whose columns equal ``equal``'s values, with
        exactly ``columns`` (``_shaped``), and (``tagged``) each row's row group in ``__group``."""
        import numpy as np
        import pyarrow.parquet as pq

        footer, values = candidate.footer, candidate.values
        in_file = [name for name in dict.fromkeys([*columns, *equal]) if name in footer.columns and name not in values]
        fs, _ = self._filesystem()
        with fs.open_input_file(candidate.path) as source:
            if source.size() != footer.size:
                raise _ChangedFile(candidate.path)
            reader = pq.ParquetFile(source, metadata=footer.metadata, pre_buffer=self._remote())
            read = reader.read_row_groups(groups, columns=in_file, use_threads=len(in_file) > 2)
        mask = _equal_mask(read, equal)
        shaped = _shaped(read, mask, columns, schema, values)
        if not tagged:
            return shaped
        group = np.repeat(np.asarray(groups, np.int32), [footer.rows[g] for g in groups])
        return shaped.append_column(
            "__group", pa.array(group if mask is None else group[mask.to_numpy(zero_copy_only=False)])
        )

    def _remote(self) -> bool:
        """Whether the lake is on S3: pyarrow then pre-buffers a row group's column chunks (one
        request for those that lie together, not one each); locally that only costs time."""
        return not isinstance(self.store, LocalBlobStore)

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
        return self._scan(table, None, columns, {column: value}, filter, None, kept_as=key)

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
                storage_options=self.delta_options() or None,
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
