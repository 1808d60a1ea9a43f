"""The lake benchmark (``make bench``; alone: ``.venv/bin/python bench/lake_bench.py``, ``--quick``
for a small lake that checks the script in a minute).

A Delta lake of 2,000,000 image rows over 30 days, written the way waves write it: 100,000 users,
two waves a day (33,333 uploads each, 0.5% of them rejected), each wave's rows recorded in flushes
of ``GRAYWAVE_LAKE_FLUSH_ROWS`` (8,192) rows, every flush an insert-only MERGE per table
(``Lake.record`` with the partitions ``Backends.record`` names: 5 flushes, 10 commits a wave). Rows
are recorded through ``Lake.record`` directly, not ``Backends.record``: no blob store holds these
uploads, and ``Backends.record`` would drop the rows of uploads whose original is gone.

Measured, every figure a ratio against a baseline of the same run:

(a) the API's reads through the service, one at a time (``ImageCatalog.handled(user, id)`` for
    ``GET /images/{user}/{id}``, ``ImageCatalog.page(today, user, 0, 50)`` for a user's first list
    page), p50/p95 over distinct users, on the lake as the waves wrote it and after
    ``Lake.maintain(days=None, retention_hours=168)`` (compaction, Z-order by user, checkpoint);
    baseline: the same image read by Polars over every current file of the table, with no Delta file
    pruning. And the cost of opening the table and reading one day in a fresh process
    (``Lake(...).scan("images", days=[day], columns=...)``: the log read from its last checkpoint),
    against Polars reading the same files, listed for it (no log);
(b) a flush's recording cost on that lake: ``Lake.record`` (MERGE) against a plain append
    (``deltalake.write_deltalake(..., mode="append")``) of 8,192 rows shaped alike, in turns;
(c) ``Lake.maintain`` on a day of 200,000 rows written in flushes of 1,000 rows (200 commits, a
    draining wave's flushes under a steady trickle): time, files before and after, and a full read
    of the day and a user's lookup before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from graywave.config import Settings
from graywave.records import ImageRecord, RejectRecord, handling_days, wave_upload_days
from graywave.service.backends import Backends
from graywave.service.images import Images
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.catalog import LakeCatalog
from graywave.storage.lake import CommitInfo, Lake, Maintenance

OUT = Path(__file__).with_name("out")
LAST_DAY = date(2026, 11, 25)
WAVES = (("morning", 10), ("evening", 17))
REJECTED = 0.005
RETENTION_HOURS = 168
COLUMNS = ["user_id", "image_id", "source_key"]
FRESH_RUNS = 5
FLUSH_TURNS = 7


@dataclass(frozen=True)
class Shape:
    rows: int = 2_000_000
    days: int = 30
    users: int = 100_000
    samples: int = 100
    baseline_samples: int = 21
    day_rows: int = 200_000
    """(c): rows of the one day written in small flushes."""
    small_flush: int = 1_000


QUICK = Shape(rows=120_000, days=30, users=20_000, samples=40, baseline_samples=7, day_rows=20_000)


# --- synthetic rows ---------------------------------------------------------------------------------


def uploads(rng: np.random.Generator, day: date, n: int, users: int, hour: int) -> dict[str, Any]:
    """``n`` uploads of ``day`` as numpy columns: their users, keys and times."""
    user = np.char.add("user", np.char.zfill(rng.integers(0, users, n).astype(str), 6))
    name = np.char.add(np.char.zfill(np.char.mod("%x", rng.integers(0, 2**62, n)), 16), ".jpg")
    key = np.char.add(np.char.add(f"uploads/{day}/", user), np.char.add("/", name))
    start = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour)
    at = np.datetime64(start.replace(tzinfo=None), "us") + (rng.uniform(0, 120, n) * 1e6).astype("timedelta64[us]")
    return {"user": user, "name": name, "key": key, "at": at}


def image_rows(rng: np.random.Generator, up: dict[str, Any], day: date) -> pa.Table:
    n = len(up["key"])
    counts = rng.multinomial(12_192_768, rng.dirichlet(np.ones(16), n)) if n else np.zeros((0, 16), np.int64)
    at = pa.array(up["at"], pa.timestamp("us", tz="UTC"))
    done = pa.array(up["at"] + (rng.uniform(1, 900, n) * 1e6).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC"))
    keys = up["key"].tolist()
    return pa.table(
        {
            "image_id": [hashlib.sha256(k.encode()).hexdigest()[:20] for k in keys],
            "user_id": up["user"],
            "upload_date": pa.array([day] * n, pa.date32()),
            "file_name": up["name"],
            "source_key": keys,
            "processed_key": np.char.replace(up["key"], "uploads/", "processed/"),
            "uploaded_at": at,
            "processed_at": done,
            "width": np.full(n, 4032, np.int32),
            "height": np.full(n, 3024, np.int32),
            "format": ["JPEG"] * n,
            "pixel_count": np.full(n, 12_192_768),
            "source_bytes": rng.integers(1_500_000, 2_500_000, n),
            "processed_bytes": rng.integers(1_300_000, 2_300_000, n),
            "histogram": pa.FixedSizeListArray.from_arrays(counts.astype(np.int64).ravel(), 16).cast(
                pa.list_(pa.int64())
            ),
        }
    ).cast(ImageRecord.ARROW_SCHEMA)


def reject_rows(rng: np.random.Generator, up: dict[str, Any]) -> pa.Table:
    n = len(up["key"])
    at = pa.array(up["at"], pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "source_key": up["key"],
            "user_id": up["user"],
            "reason": ["corrupt"] * n,
            "detail": ["broken JPEG data: premature end of data segment"] * n,
            "uploaded_at": at,
            "seen_at": at,
            "source_bytes": rng.integers(100_000, 2_500_000, n),
        }
    ).cast(RejectRecord.ARROW_SCHEMA)


def among(day: date) -> list[date]:
    """The partitions that ``Backends.record`` names for a wave of ``day``."""
    return handling_days(wave_upload_days(day)[0], day)


def record(lake: Lake, day: date, wave: str, images: pa.Table, rejects: pa.Table) -> float:
    """One flush as ``Backends.record`` writes it to the lake; the seconds of its ``images`` commit."""
    info = CommitInfo("record", day, wave)
    started = time.perf_counter()
    lake.record("images", images, day=day, wave=wave, among=among(day), info=info)
    seconds = time.perf_counter() - started
    lake.record("rejects", rejects, day=day, wave=wave, among=among(day), info=info)
    return seconds


def wave_flushes(
    rng: np.random.Generator, day: date, n: int, users: int, hour: int, flush_rows: int
) -> list[tuple[pa.Table, pa.Table]]:
    """The flushes of one wave of ``n`` uploads: (images, rejects) of every ``flush_rows`` handled uploads."""
    up = uploads(rng, day, n, users, hour)
    rejected = rng.random(n) < REJECTED
    flushes = []
    for start in range(0, n, flush_rows):
        part = {name: column[start : start + flush_rows] for name, column in up.items()}
        mask = rejected[start : start + flush_rows]
        images = image_rows(rng, {name: column[~mask] for name, column in part.items()}, day)
        rejects = reject_rows(rng, {name: column[mask] for name, column in part.items()})
        flushes.append((images, rejects))
    return flushes


def build_lake(root: Path, shape: Shape, flush_rows: int) -> tuple[list[tuple[str, str]], list[float], float]:
    """Write the lake as its waves would; return (user, image_id) pairs spread over it (distinct
    users), the seconds of each ``images`` MERGE, and the build's seconds."""
    rng = np.random.default_rng(0)
    lake = Lake(LocalBlobStore(root))
    per_wave = shape.rows // (shape.days * len(WAVES))
    wanted: dict[str, str] = {}
    merges: list[float] = []
    started = time.perf_counter()
    for d in range(shape.days):
        day = LAST_DAY - timedelta(days=shape.days - 1 - d)
        for wave, hour in WAVES:
            for images, rejects in wave_flushes(rng, day, per_wave, shape.users, hour, flush_rows):
                merges.append(record(lake, day, wave, images, rejects))
                pick = rng.integers(0, images.num_rows, 2 * shape.samples // (shape.days * len(WAVES)) + 2)
                users, ids = images.column("user_id").to_pylist(), images.column("image_id").to_pylist()
                for i in pick.tolist():
                    wanted.setdefault(users[i], ids[i])
        print(f"  day {d + 1}/{shape.days} recorded ({time.perf_counter() - started:.0f} s)", flush=True)
    pairs = list(wanted.items())
    rng.shuffle(pairs)
    return [(str(u), str(i)) for u, i in pairs], merges, time.perf_counter() - started


# --- measurements ------------------------------------------------------------------------------------


def timed(call: Callable[[Any], object], samples: Sequence[Any]) -> tuple[float, np.ndarray]:
    """(the first call in ms, the following ones' ms)."""
    latencies = []
    for sample in samples:
        started = time.perf_counter()
        call(sample)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies[0], np.array(latencies[1:])


@dataclass(frozen=True)
class Reads:
    get_first: float
    get: np.ndarray
    page_first: float
    page: np.ndarray
    plain_first: float
    plain: np.ndarray
    fresh_delta: float
    fresh_plain: float
    files: int
    pruned: int
    """Files of ``images`` that Delta's pruning by partition and statistics leaves for a user."""
    page_files: float
    page_groups: float
    """Files and row groups of ``images`` that a user's lookup reads (mean over the page users)."""
    get_files: float
    """Files of ``images`` that a GET's lookup (user and image id) reads (mean over the GET users)."""
    kept: int
    kept_mb: float
    """Footers (with membership filters) that the page's lake keeps, of both tables, and their memory."""
    log: str


def backends_on(root: Path) -> Backends:
    """The embedded default over the lake at ``root`` (an empty blob folder: nothing pending)."""
    lake = Lake(LocalBlobStore(root / "lake"))
    return Backends(blobs=LocalBlobStore(root / "blobs"), lake=lake, catalog=LakeCatalog(lake))


FRESH = """
import json, sys, time
from datetime import date
import deltalake, polars as pl
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import Lake
root, day, columns, paths = sys.argv[1], date.fromisoformat(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
started = time.perf_counter()
if paths:
    rows = pl.scan_parquet(paths, hive_partitioning=True).select(columns).collect().height
else:
    rows = Lake(LocalBlobStore(root)).scan("images", days=[day], columns=columns).num_rows
print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
"""
"""A fresh process opens the lake and reads one day (libraries imported before the clock starts);
with ``paths``, Polars reads those files instead (no Delta log)."""


def fresh_read(lake_root: Path, day: date, paths: list[str]) -> tuple[float, int]:
    """(median ms, rows) of ``FRESH`` in ``FRESH_RUNS`` new processes."""
    runs = []
    for _ in range(FRESH_RUNS):
        done = subprocess.run(
            [sys.executable, "-c", FRESH, str(lake_root), day.isoformat(), json.dumps(COLUMNS), json.dumps(paths)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return statistics.median(r["seconds"] for r in runs) * 1000, runs[0]["rows"]


def log_state(table: Path) -> str:
    """The Delta log of a table: its latest version, and its last checkpoint."""
    log = table / "_delta_log"
    commits = sorted(int(p.name.split(".")[0]) for p in log.glob("*.json"))
    checkpoints = sorted(int(p.name.split(".")[0]) for p in log.glob("*.checkpoint*.parquet"))
    if not checkpoints:
        return f"version {commits[-1]}, no checkpoint: a reader replays {len(commits)} commit files"
    after = [c for c in commits if c > checkpoints[-1]]
    return f"version {commits[-1]}, checkpoint at version {checkpoints[-1]}, {len(after)} commit files after it"


def measure_reads(root: Path, pairs: list[tuple[str, str]], shape: Shape, day: date) -> Reads:
    gets, pages = pairs[: shape.samples], pairs[shape.samples : 2 * shape.samples]
    catalog = Images(Settings(), backends_on(root))

    def get(pair: tuple[str, str]) -> None:
        assert catalog.handled(*pair) is not None

    get_first, get_lat = timed(get, gets)
    catalog = Images(Settings(), backends_on(root))  # a new lake object: nothing cached from the GETs

    def page(pair: tuple[str, str]) -> None:
        entries, total = catalog.page(LAST_DAY, pair[0], 0, 50)
        assert total >= 1 and entries

    page_first, page_lat = timed(page, pages)
    lake = Lake(LocalBlobStore(root / "lake"))
    table = Path(lake.uri("images"))
    files = [str(table / f) for f in lake.files("images")]

    def plain(pair: tuple[str, str]) -> None:
        condition = (pl.col("user_id") == pair[0]) & (pl.col("image_id") == pair[1])
        assert pl.scan_parquet(files, hive_partitioning=True).filter(condition).collect().height == 1

    plain_first, plain_lat = timed(plain, gets[: shape.baseline_samples])
    snapshot = lake._snapshot("images", None, {"user_id": gets[0][0]}, None)  # Delta's pruning
    assert snapshot is not None
    served = catalog.backends.lake  # the pages' lake: its footers and filters are kept
    every = served._snapshot("images", None, {}, None)
    assert every is not None
    reads = [served._candidates(every[0], every[1], {"user_id": user}) for user, _ in pages]
    gets_read = [served._candidates(every[0], every[1], {"user_id": u, "image_id": i}) for u, i in gets]
    day_files = [f for f in files if f"date={day.isoformat()}/" in f]
    fresh_delta, rows = fresh_read(root / "lake", day, [])
    fresh_plain, plain_rows = fresh_read(root / "lake", day, day_files)
    assert rows == plain_rows, (rows, plain_rows)
    return Reads(
        get_first,
        get_lat,
        page_first,
        page_lat,
        plain_first,
        plain_lat,
        fresh_delta,
        fresh_plain,
        len(files),
        len(snapshot[0]),
        statistics.mean(len(found) for found in reads),
        statistics.mean(sum(len(c.groups) for c in found) for found in reads),
        statistics.mean(len(found) for found in gets_read),
        len(served._footers),
        served._footers.memory / 1e6,
        log_state(table),
    )


def flush_costs(
    lake: Lake, rng: np.random.Generator, day: date, shape: Shape, flush_rows: int
) -> dict[str, list[float]]:
    """(b): seconds of a MERGE flush and of a plain append of as many rows, in turns, into ``day``."""
    from deltalake import write_deltalake

    seconds: dict[str, list[float]] = {"merge": [], "append": []}
    for turn in range(2 * FLUSH_TURNS):
        images = image_rows(rng, uploads(rng, day, flush_rows, shape.users, 10 + turn % 12), day)
        started = time.perf_counter()
        if turn % 2 == 0:
            lake.record(
                "images", images, day=day, wave="morning", among=among(day), info=CommitInfo("record", day, "morning")
            )
            seconds["merge"].append(time.perf_counter() - started)
        else:
            rows = lake._rows("images", images, wave="morning", date=day)  # shaped as record shapes them
            write_deltalake(
                lake.uri("images"),
                rows,
                mode="append",
                partition_by=["date"],
                writer_properties=lake._writer_properties(),
                commit_properties=lake._properties(CommitInfo("append", day, "morning")),
            )
            seconds["append"].append(time.perf_counter() - started)
    return seconds


@dataclass(frozen=True)
class DayMaintenance:
    write_s: float
    commits: int
    done: Maintenance
    scan_before: float
    scan_after: float
    lookup_before: np.ndarray
    lookup_after: np.ndarray
    rows: int
    log_before: str
    log_after: str


def maintain_a_day(root: Path, shape: Shape) -> DayMaintenance:
    """(c): one day of ``shape.day_rows`` rows in flushes of ``shape.small_flush``, then ``Lake.maintain``."""
    rng = np.random.default_rng(1)
    lake = Lake(LocalBlobStore(root))
    day = LAST_DAY
    started = time.perf_counter()
    flushes = wave_flushes(rng, day, shape.day_rows, shape.users, 10, shape.small_flush)
    for images, _ in flushes:
        lake.record(
            "images", images, day=day, wave="morning", among=among(day), info=CommitInfo("record", day, "morning")
        )
    write_s = time.perf_counter() - started
    users = list(dict.fromkeys(flushes[-1][0].column("user_id").to_pylist()))[: shape.baseline_samples + 1]

    def scan() -> float:
        begun = time.perf_counter()
        lake.scan("images", days=[day])
        return time.perf_counter() - begun

    def lookups(reader: Lake) -> np.ndarray:
        return timed(lambda u: reader.scan("images", equal={"user_id": u}), users)[1]

    log_before = log_state(Path(lake.uri("images")))
    scan_before = min(scan() for _ in range(3))
    lookup_before = lookups(Lake(LocalBlobStore(root)))
    done = lake.maintain(days=None, retention_hours=RETENTION_HOURS, info=CommitInfo("maintenance"))
    (images,) = [m for m in done if m.table == "images"]
    scan_after = min(scan() for _ in range(3))
    lookup_after = lookups(Lake(LocalBlobStore(root)))
    return DayMaintenance(
        write_s,
        len(flushes),
        images,
        scan_before,
        scan_after,
        lookup_before,
        lookup_after,
        shape.day_rows,
        log_before,
        log_state(Path(lake.uri("images"))),
    )


# --- report ------------------------------------------------------------------------------------------


def pcts(values: np.ndarray) -> tuple[float, float]:
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def cell(first: float, values: np.ndarray) -> str:
    p50, p95 = pcts(values)
    return f"{p50:.1f} / {p95:.1f} ({first:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a small lake ({QUICK.rows:,} rows): checks the script")
    options = parser.parse_args()
    shape = QUICK if options.quick else Shape()
    flush_rows = Settings().lake_flush_rows
    command = shlex.join([".venv/bin/python", "bench/lake_bench.py", *sys.argv[1:]])
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graywave-lake-bench-") as tmp:
        root = Path(tmp)
        print(f"building the lake: {shape.rows:,} image rows over {shape.days} days ...", flush=True)
        pairs, merges, built = build_lake(root / "lake", shape, flush_rows)
        assert len(pairs) >= 2 * shape.samples, len(pairs)
        lake = Lake(LocalBlobStore(root / "lake"))
        commits = lake.version("images") + 1
        read_day = LAST_DAY - timedelta(days=shape.days // 2)
        print("reads on the lake as the waves wrote it ...", flush=True)
        before = measure_reads(root, pairs, shape, read_day)
        print("maintenance ...", flush=True)
        maintained = lake.maintain(days=None, retention_hours=RETENTION_HOURS, info=CommitInfo("maintenance"))
        print("reads after maintenance ...", flush=True)
        after = measure_reads(root, pairs, shape, read_day)
        print("flush costs ...", flush=True)
        today = LAST_DAY + timedelta(days=1)
        flushes = flush_costs(lake, np.random.default_rng(2), today, shape, flush_rows)
        print(f"(c) a day of {shape.day_rows:,} rows in flushes of {shape.small_flush:,} ...", flush=True)
        day = maintain_a_day(root / "day-lake", shape)

    merge_s, append_s = statistics.median(flushes["merge"]), statistics.median(flushes["append"])
    build_p50, build_p95 = pcts(np.array(merges) * 1000)
    get_after, page_after = pcts(after.get)[0], pcts(after.page)[0]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Command: `{command}` (from the repository root; {time.perf_counter() - begun:.0f} s).",
        "",
        f"Lake: {shape.rows:,} image rows over {shape.days} days, {shape.users:,} users, {len(WAVES)} waves a day, "
        f"flushes of {flush_rows:,} rows, each an insert-only MERGE of `images` and one of `rejects` "
        f"(`Lake.record`): {commits} commits of `images`, built in {built:.0f} s "
        f"(an `images` MERGE took p50 {build_p50:.0f} ms, p95 {build_p95:.0f} ms, on the lake as it grew).",
        "",
        "### (a) The API's reads through the service, one at a time",
        "",
        f"p50 / p95 (first call) in ms, {len(after.get) + 1} distinct users each; `today` is the lake's last day "
        "(nothing pending). Fresh process: median of "
        f"{FRESH_RUNS}, libraries imported before the clock, {len(COLUMNS)} columns of the day {read_day}.",
        "",
        "| read | as the waves wrote it | after `Lake.maintain` | before / after | target |",
        "|---|---|---|---|---|",
        f"| `GET /images/{{user}}/{{id}}`: `ImageCatalog.handled` | {cell(before.get_first, before.get)} "
        f"| {cell(after.get_first, after.get)} | {pcts(before.get)[0] / get_after:.1f}x "
        f"| p50 ≤ 20 ms: {'met' if get_after <= 20 else '**missed**'} |",
        f"| first list page: `ImageCatalog.page(today, user, 0, 50)` | {cell(before.page_first, before.page)} "
        f"| {cell(after.page_first, after.page)} | {pcts(before.page)[0] / page_after:.1f}x "
        f"| p50 ≤ 50 ms: {'met' if page_after <= 50 else '**missed**'} |",
        f"| baseline: Polars over every current file of `images`, user and id filtered, no Delta pruning "
        f"({len(before.plain) + 1} reads) | {cell(before.plain_first, before.plain)} "
        f"| {cell(after.plain_first, after.plain)} | {pcts(before.plain)[0] / pcts(after.plain)[0]:.1f}x | |",
        f"| GET against that baseline (p50) | {pcts(before.plain)[0] / pcts(before.get)[0]:.1f}x faster "
        f"| {pcts(after.plain)[0] / get_after:.1f}x faster | | |",
        f"| fresh process: open `images` and read one day (`Lake.scan`) | {before.fresh_delta:.0f} "
        f"| {after.fresh_delta:.0f} | {before.fresh_delta / after.fresh_delta:.1f}x | |",
        f"| baseline: Polars reading the same day's files, listed for it (no log) | {before.fresh_plain:.0f} "
        f"| {after.fresh_plain:.0f} | | |",
        f"| fresh read / its baseline | {before.fresh_delta / before.fresh_plain:.2f}x "
        f"| {after.fresh_delta / after.fresh_plain:.2f}x | | |",
        "",
        f"`images` as the waves wrote it: {before.files} files, of which Delta's pruning by partition and "
        f"statistics leaves {before.pruned} for a user; a user's lookup reads {before.page_files:.1f} of them "
        f"({before.page_groups:.1f} row groups), a GET's {before.get_files:.2f} (the kept footers' min/max and "
        f"membership filters); {before.log}. After maintenance: {after.files} files, Delta leaves {after.pruned}, "
        f"a lookup reads {after.page_files:.1f} ({after.page_groups:.1f} row groups), a GET's {after.get_files:.2f}; "
        f"{after.log}. Kept by the pages' lake (both tables): {before.kept} footers, {before.kept_mb:.0f} MB "
        f"(estimate) before maintenance; {after.kept}, {after.kept_mb:.0f} MB after.",
        "",
        f"`Lake.maintain(days=None, retention_hours={RETENTION_HOURS})`: "
        + "; ".join(m.line() for m in maintained)
        + ".",
        "",
        f"### (b) Recording a flush of {flush_rows:,} rows into this lake ({shape.rows:,} rows, maintained)",
        "",
        f"Into the partition of the day after the last ({today}), {FLUSH_TURNS} of each in turns, median seconds:",
        "",
        "| write | median | min | max |",
        "|---|---|---|---|",
        f"| `Lake.record`: insert-only MERGE on `source_key` over {len(among(today))} partitions "
        f"| {merge_s * 1000:.0f} ms | {min(flushes['merge']) * 1000:.0f} ms | {max(flushes['merge']) * 1000:.0f} ms |",
        f'| baseline: `write_deltalake(mode="append")` of as many rows, shaped alike '
        f"| {append_s * 1000:.0f} ms | {min(flushes['append']) * 1000:.0f} ms | {max(flushes['append']) * 1000:.0f} ms |",
        f"| **MERGE / append** | **{merge_s / append_s:.1f}x** | | |",
        "",
        f"### (c) `Lake.maintain` on a day of {day.rows:,} rows written in {day.commits} flushes of "
        f"{shape.small_flush:,} rows",
        "",
        "| | before | after | before / after |",
        "|---|---|---|---|",
        f"| `images` files | {day.done.files_before} | {day.done.files_after} | |",
        f"| full read of the day (`Lake.scan`, every column; best of 3) | {day.scan_before * 1000:.0f} ms "
        f"| {day.scan_after * 1000:.0f} ms | {day.scan_before / day.scan_after:.1f}x |",
        f"| one user's rows (`Lake.scan(equal=user)`, p50 of {len(day.lookup_before)}) "
        f"| {pcts(day.lookup_before)[0]:.1f} ms | {pcts(day.lookup_after)[0]:.1f} ms "
        f"| {pcts(day.lookup_before)[0] / pcts(day.lookup_after)[0]:.1f}x |",
        "",
        f"Maintenance of the day: **{day.done.seconds:.1f} s** (compaction, Z-order by user, checkpoint, vacuum of "
        f"files older than {RETENTION_HOURS} h: {day.done.files_vacuumed} vacuumed), against "
        f"{day.write_s:.0f} s to write the day in its {day.commits} flushes ({day.done.seconds / day.write_s:.2f}x) "
        f"and {day.done.seconds / day.scan_before:.0f}x a full read of it. Log before: {day.log_before}; after: "
        f"{day.log_after}.",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / ("lake-quick.md" if options.quick else "lake.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
