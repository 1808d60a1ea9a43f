"""Per-photo figures for the capacity plan: bytes stored and object-store requests.

    .venv/bin/python bench/capacity.py [--users 100000] [--photos-per-day 2] [--bursts-per-day 2] [--json]

Everything below is measured in this run, then multiplied out:

1. **Bytes per photo.** Phones upload 12 MP JPEGs of the ``--size-class`` of ``wave_bench.py``'s
   samples (the 2 MB class by default, the class its wave uses). A real wave (``service.wave.run_wave``,
   no Prefect) processes ``--photos`` of them with blobs and lake on S3: the processed grayscale JPEG
   (``Settings().jpeg_quality``) is what it wrote, the Parquet bytes per row are the ``images`` files
   it wrote divided by their rows. Waves commit files of at most ``GRAYWAVE_LAKE_FLUSH_ROWS`` rows to
   the Delta tables, so a lake at scale is measured too: ``--lake-rows`` synthetic image rows (one
   burst: one row per user, realistic keys, sizes and histograms) recorded in flushes as
   ``Backends.record`` does (``Lake.record``: an insert-only MERGE per flush). The
   MongoDB figure is the BSON size of ``ImageRecord.to_document`` (``bson.encode``), indexes excluded.
   Storage per year multiplies these by ``--users`` x ``--photos-per-day`` x 365.

2. **Object-store requests per photo.** moto's S3 server runs on 127.0.0.1 behind a counting WSGI
   wrapper, so every request is counted where it arrives: the phones' presigned POSTs (httpx), the
   wave's boto3 calls, delta-rs's S3 client (the Delta log, the lake's writes) and Polars' (the lake's
   reads), told apart by User-Agent.
   boto3's ``before-send`` event counts the boto3 side again, as a cross-check. A second wave with
   nothing new, over a lake that also holds a full file (``GRAYWAVE_LAKE_FLUSH_ROWS`` rows) of the day
   before, measures a steady-state wave's fixed cost and the reads per lake file scanned. Each kind
   of request is then scaled by what it grows with (photos, batches, listing pages, lake flushes,
   lake files scanned, the wave) to a burst of ``--users`` x ``--photos-per-day`` /
   ``--bursts-per-day`` photos. The Delta log's requests (``_delta_log/`` keys) are a class of their
   own: the steady wave's are a wave's fixed cost, the rest of the burst wave's grow with its flushes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

# The local S3 server accepts any credentials; these keep boto3, delta-rs and Polars away from real ones.
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_key, None)

import boto3  # noqa: E402
import bson  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from wave_bench import SIZES, samples  # noqa: E402

from graywave.config import Settings  # noqa: E402
from graywave.kernels.codecs import decode_luma, encode_luma_jpeg, upright  # noqa: E402
from graywave.records import ImageRecord, handling_days, wave_upload_days  # noqa: E402
from graywave.service.wave import run_wave, split_batches  # noqa: E402
from graywave.storage.blobs import LocalBlobStore, open_blob_store  # noqa: E402
from graywave.storage.lake import CommitInfo, Lake  # noqa: E402
from graywave.storage.layout import parse_upload_key, upload_key, uploads_prefix  # noqa: E402
from graywave.storage.s3 import S3BlobStore  # noqa: E402
from graywave.storage.uploads import presign_upload  # noqa: E402

DAY = date(2026, 11, 25)
BUCKET = "graywave-photos"
BLOBS, LAKE = "blobs", "lake"
UPLOAD_THREADS = 4
YEAR_DAYS = 365
FULL = f"date={DAY - timedelta(days=1)}/"
"""The lake partition of the steady wave's full file (the day before's waves)."""


# --- counting S3 server -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    phase: str
    operation: str
    target: str
    client: str
    path: str


class CountingS3:
    """moto's S3 server on 127.0.0.1 (as ``tests/conftest.py``'s ``LocalS3``), its WSGI app wrapped so
    that each request is recorded, under the phase set by ``phase``."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        app = DomainDispatcherApplication(create_backend_app)
        self.requests: list[Request] = []
        self.current: str | None = None
        self._lock = threading.Lock()

        def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if self.current is not None:
                request = classify(self.current, environ)
                with self._lock:
                    self.requests.append(request)
            answer: Iterable[bytes] = app(environ, start_response)
            return answer

        self._server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=MotoRequestHandler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    def __enter__(self) -> CountingS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join()

    def phase(self, name: str | None) -> None:
        self.current = name

    def of(self, phase: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.phase == phase]


def classify(phase: str, environ: dict[str, Any]) -> Request:
    """The S3 operation of a path-style request, what it touches and which client sent it."""
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    operation, key = operation_of(method, key, query, environ)
    return Request(phase, operation, target(bucket, key, method), client_of(environ.get("HTTP_USER_AGENT", "")), key)


def client_of(agent: str) -> str:
    """Which client sent a request, by its User-Agent."""
    if "Boto3" in agent or "Botocore" in agent:
        return "boto3 (graywave)"
    if agent.startswith("object_store"):
        return "delta-rs (lake log, writes)"
    if agent.startswith("polars"):
        return "Polars (lake reads)"
    if "aws-sdk-cpp" in agent:
        return "pyarrow"
    if "httpx" in agent:
        return "phone (presigned POST)"
    return agent or "?"


def operation_of(method: str, key: str, query: dict[str, list[str]], environ: dict[str, Any]) -> tuple[str, str]:
    """The S3 operation of a request, and the key (or prefix) it is about."""
    if method == "HEAD":
        return ("HeadObject" if key else "HeadBucket"), key
    if method == "GET":
        return get_operation(key, query)
    if method == "PUT":
        return put_operation(key, query, environ), key
    if method == "POST":
        return post_operation(key, query)
    if method == "DELETE":
        return ("AbortMultipartUpload" if "uploadId" in query else "DeleteObject"), key
    return method, key


def get_operation(key: str, query: dict[str, list[str]]) -> tuple[str, str]:
    if key:
        return "GetObject", key
    if "list-type" in query:
        return "ListObjectsV2", query.get("prefix", [""])[0]
    if "location" in query:
        return "GetBucketLocation", key
    return "ListObjects", query.get("prefix", [""])[0]


def put_operation(key: str, query: dict[str, list[str]], environ: dict[str, Any]) -> str:
    if not key:
        return "CreateBucket"
    if "partNumber" in query:
        return "UploadPart"
    if "HTTP_X_AMZ_COPY_SOURCE" in environ:
        return "CopyObject"
    if "HTTP_IF_NONE_MATCH" in environ:
        return "PutObject If-None-Match"
    if "HTTP_IF_MATCH" in environ:
        return "PutObject If-Match"
    return "PutObject"


def post_operation(key: str, query: dict[str, list[str]]) -> tuple[str, str]:
    if "uploads" in query:
        return "CreateMultipartUpload", key
    if "uploadId" in query:
        return "CompleteMultipartUpload", key
    if "delete" in query:
        return "DeleteObjects", key
    return "PostObject", f"{BLOBS}/uploads/"  # a presigned POST: the key is in the form


def target(bucket: str, key: str, method: str = "GET") -> str:
    """What a request touches: the bucket, or the kind of object (or prefix) of the key."""
    if not key:
        return "bucket"
    store, _, rest = key.partition("/")
    if store == BLOBS:
        if rest.startswith("uploads/"):
            return "uploads"
        if rest.startswith("processed/"):
            return "processed images"
    if store == LAKE:
        if rest.endswith("/_delta_log/00000000000000000000.json") and method == "PUT":
            return "Delta log: the table's creation"  # once per table, not per burst
        if "/_delta_log/" in rest or rest.endswith("/_delta_log"):
            return "Delta log"
        if rest.endswith(".parquet"):
            return "lake Parquet file"
        return "lake folders"
    return key


DELTA_LOG = "lake flush, + fixed per wave"
"""The Delta log's requests: the reads of the wave with nothing new are a wave's fixed cost (opening
``images`` and ``rejects`` to skip handled uploads); the rest of the burst's wave's are per flush
(each commit opens the table, writes its log entry with ``If-None-Match`` and reads it back)."""

SCALES = {
    ("PostObject", "uploads"): "photo",
    ("GetObject", "uploads"): "photo",
    ("PutObject", "processed images"): "photo",
    ("HeadObject", "uploads"): "photo",
    ("HeadBucket", "bucket"): "batch",
    ("ListObjectsV2", "uploads"): "listing page",
    ("PutObject", "lake Parquet file"): "lake flush",
    ("PutObject If-None-Match", "Delta log"): DELTA_LOG,
    ("PutObject If-None-Match", "Delta log: the table's creation"): "the table (once)",
    ("GetObject", "Delta log"): DELTA_LOG,
    ("ListObjectsV2", "Delta log"): DELTA_LOG,
    ("HeadObject", "Delta log"): DELTA_LOG,
    ("GetObject", "lake Parquet file"): "lake file scanned",
    ("HeadObject", "lake Parquet file"): "lake file scanned",
}
"""What each kind of request grows with; anything else is a fixed cost of a wave."""


def scale(operation: str, what: str) -> str:
    return SCALES.get((operation, what), "wave")


class Boto3Events:
    """boto3's own count of the requests it sends (``before-send``, once per attempt), by operation."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.current: str | None = None
        boto3.setup_default_session()
        session: Any = boto3.DEFAULT_SESSION
        session.events.register("before-send.s3", self._sent)  # clients made from now on inherit it

    def _sent(self, event_name: str, **_: Any) -> None:
        if self.current is not None:
            self.counts[(self.current, event_name.rsplit(".", 1)[-1])] += 1


# --- records at scale ---------------------------------------------------------------------------


def synthetic_records(
    rng: np.random.Generator, template: Sequence[ImageRecord], n: int, upload_day: date, hour: int
) -> list[ImageRecord]:
    """``n`` image rows of one burst (one per user), shaped like ``template`` (the real wave's rows):
    presigned-upload keys, sizes spread around the measured ones, histograms drawn around theirs,
    uploads within 2 minutes and processing within 15."""
    source = float(np.mean([r.source_bytes for r in template]))
    processed = float(np.mean([r.processed_bytes for r in template]))
    fractions = np.mean([np.array(r.histogram) / r.pixel_count for r in template], axis=0)
    probabilities = rng.dirichlet(20 * fractions + 0.2, size=n)
    first = template[0]
    counts = rng.multinomial(first.pixel_count, probabilities)
    burst = datetime.combine(upload_day, datetime.min.time(), UTC) + timedelta(hours=hour)
    uploaded = rng.uniform(0, 120, n)
    waited = rng.uniform(1, 900, n)
    spread = rng.lognormal(0.0, 0.25, (n, 2))
    records = []
    for i in range(n):
        user = f"user{i:06d}"
        key = parse_upload_key(upload_key(upload_day, user, f"{rng.bytes(16).hex()}.jpg"))
        at = burst + timedelta(seconds=float(uploaded[i]))
        records.append(
            ImageRecord(
                image_id=key.image_id,
                user_id=user,
                upload_date=upload_day,
                file_name=key.file_name,
                source_key=key.key,
                processed_key=key.processed_key,
                uploaded_at=at,
                processed_at=at + timedelta(seconds=float(waited[i])),
                width=first.width,
                height=first.height,
                format=first.format,
                pixel_count=first.pixel_count,
                source_bytes=int(source * spread[i, 0]),
                processed_bytes=int(processed * spread[i, 1]),
                histogram=tuple(int(c) for c in counts[i]),
            )
        )
    return records


def record_in_flushes(lake: Lake, records: Sequence[ImageRecord], day: date, wave: str, flush_rows: int) -> int:
    """Record as a wave's ``Recorder`` does (``Backends.record``: an insert-only MERGE of every
    ``flush_rows`` rows, over the partitions that can hold them); return the commits made."""
    commits = 0
    among = handling_days(wave_upload_days(day)[0], day)
    for start in range(0, len(records), flush_rows):
        rows = ImageRecord.to_arrow(records[start : start + flush_rows])
        lake.record("images", rows, day=day, wave=wave, among=among, info=CommitInfo("record", day, wave))
        commits += 1
    return commits


def parquet_bytes(lake: Lake, table: str = "images") -> tuple[int, int]:
    """(bytes, files) of the data files of ``table``'s latest version (not its Delta log)."""
    current = {f"{table}/{path}" for path in lake.files(table)}
    sizes = [blob.size for blob in lake.store.list(f"{table}/") if blob.key in current]
    assert len(sizes) == len(current), (len(sizes), len(current))
    return sum(sizes), len(sizes)


# --- the runs -----------------------------------------------------------------------------------


@dataclass
class Measured:
    size_class: str
    photos: int
    workers: int
    batch_size: int
    jpeg_quality: int
    flush_rows: int
    original_bytes: float = 0.0
    processed_bytes: float = 0.0
    by_class: dict[str, tuple[float, float]] = field(default_factory=dict)
    wave_parquet: tuple[int, int, int] = (0, 0, 0)  # bytes, files, rows
    scale_parquet: tuple[int, int, int] = (0, 0, 0)
    bson_bytes: float = 0.0
    bson_scale_bytes: float = 0.0
    upload_seconds: float = 0.0
    wave_seconds: float = 0.0
    steady_seconds: float = 0.0
    units: dict[str, float] = field(default_factory=dict)
    steady_units: dict[str, float] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    steady_requests: list[Request] = field(default_factory=list)
    boto3_agrees: bool = False
    boto3_counts: dict[str, int] = field(default_factory=dict)
    server_boto3_counts: dict[str, int] = field(default_factory=dict)


def processed_sizes(settings: Settings) -> dict[str, tuple[float, float]]:
    """Mean (original, processed) bytes of each sample class, processed as a wave does."""
    result = {}
    for label, files in samples().items():
        processed = [
            len(encode_luma_jpeg(upright(decode_luma(data, settings.max_pixels)), settings.jpeg_quality))
            for data in files
        ]
        result[label] = (statistics.mean(map(len, files)), statistics.mean(processed))
    return result


def phone_uploads(store: S3BlobStore, photos: Sequence[bytes], n: int, settings: Settings) -> None:
    """``n`` phones (users), one photo each, uploaded as the app does: a presigned POST straight to S3."""

    def upload(i: int, client: httpx.Client) -> None:
        post = presign_upload(
            store, DAY, f"user{i:06d}", "image/jpeg", settings.max_upload_bytes, settings.upload_url_expiry_s
        )
        data = photos[i % len(photos)]
        answer = client.post(post.url, data=post.fields, files={"file": ("photo.jpg", data, "image/jpeg")})
        assert answer.status_code in (200, 201, 204), answer.text

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda i: upload(i, client), range(n)))


def batches(photos: int, workers: int, batch_size: int) -> int:
    """How many batches a wave of ``photos`` uploads has (``service.wave.split_batches``)."""
    return len(split_batches(cast(Any, range(photos)), workers, batch_size))


def listing_pages(objects_per_day: Iterable[int], page_size: int) -> int:
    return sum(max(1, math.ceil(n / page_size)) for n in objects_per_day)


def measure(args: argparse.Namespace) -> Measured:
    events = Boto3Events()
    with CountingS3() as s3, tempfile.TemporaryDirectory(prefix="graywave-capacity-") as tmp:
        boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket=BUCKET)
        settings = Settings(
            blob_url=f"s3://{BUCKET}/{BLOBS}",
            lake_url=f"s3://{BUCKET}/{LAKE}",
            s3_endpoint_url=s3.endpoint,
            mongodb_uri=None,
            device="cpu",
        )
        m = Measured(
            size_class=args.size_class,
            photos=args.photos,
            workers=settings.workers,
            batch_size=settings.batch_size,
            jpeg_quality=settings.jpeg_quality,
            flush_rows=settings.lake_flush_rows,
        )
        m.by_class = processed_sizes(settings)
        store = open_blob_store(settings.blob_url, settings.s3_endpoint_url)
        assert isinstance(store, S3BlobStore)
        lake = Lake(open_blob_store(settings.lake_url, settings.s3_endpoint_url))

        # The burst: the phones' presigned POSTs, then a wave over them.

        def phase(name: str | None) -> None:
            s3.phase(name)
            events.current = name

        phase("phone")
        started = time.perf_counter()
        phone_uploads(store, samples()[args.size_class], args.photos, settings)
        m.upload_seconds = time.perf_counter() - started
        phase("wave")
        started = time.perf_counter()
        summary = run_wave(settings, DAY, "morning", log=lambda _: None)
        m.wave_seconds = time.perf_counter() - started
        phase(None)
        print(summary.line(), file=sys.stderr, flush=True)
        assert summary.processed == args.photos, summary
        m.requests = s3.of("phone") + s3.of("wave")
        listed = [sum(1 for _ in store.list(uploads_prefix(day))) for day in wave_upload_days(DAY)]
        m.units = {
            "photo": args.photos,
            "batch": batches(args.photos, settings.workers, settings.batch_size),
            "listing page": listing_pages(listed, store.page_size),
            "lake flush": summary.commits,
            "lake file scanned": 0,
            "wave": 1,
        }

        # Bytes per photo, from what the wave wrote.
        rows = ImageRecord.from_arrow(lake.read("images"))
        m.original_bytes = statistics.mean(r.source_bytes for r in rows)
        m.processed_bytes = statistics.mean(r.processed_bytes for r in rows)
        written = [b.size for b in store.list("processed/")]
        assert len(written) == len(rows) and sum(written) == sum(r.processed_bytes for r in rows)
        m.wave_parquet = (*parquet_bytes(lake), len(rows))
        m.bson_bytes = statistics.mean(len(bson.encode(r.to_document(DAY, "morning", store.url_for))) for r in rows)

        # A steady-state wave with nothing new: the lake also holds a full file of the day before.
        rng = np.random.default_rng(0)
        yesterday = synthetic_records(rng, rows, settings.lake_flush_rows, DAY - timedelta(days=1), 17)
        record_in_flushes(lake, yesterday, DAY - timedelta(days=1), "evening", settings.lake_flush_rows)
        phase("steady")
        started = time.perf_counter()
        again = run_wave(settings, DAY, "evening", log=lambda _: None)
        m.steady_seconds = time.perf_counter() - started
        phase(None)
        assert again.processed == 0 and again.skipped == args.photos, again
        m.steady_requests = s3.of("steady")
        scanned = {r.path for r in m.steady_requests if scale(r.operation, r.target) == "lake file scanned"}
        full = [p for p in scanned if FULL in p]
        m.steady_units = {"lake file scanned": len(scanned), "full files scanned": len(full), "wave": 1}

        # boto3's own count against the server's count of boto3 requests.
        server = Counter(
            r.operation.split(" ")[0] for r in m.requests + m.steady_requests if r.client == "boto3 (graywave)"
        )
        mine: Counter[str] = Counter()
        for (_, operation), count in events.counts.items():
            mine[operation] += count
        m.boto3_counts, m.server_boto3_counts = dict(mine), dict(server)
        m.boto3_agrees = mine == server

        # A lake at scale: one burst of rows, appended in flushes as a wave does.
        scale_lake = Lake(LocalBlobStore(Path(tmp) / "lake"))
        burst = synthetic_records(rng, rows, args.lake_rows, DAY, 10)
        files = record_in_flushes(scale_lake, burst, DAY, "morning", settings.lake_flush_rows)
        size, counted = parquet_bytes(scale_lake)
        assert counted == files
        m.scale_parquet = (size, files, len(burst))
        m.bson_scale_bytes = statistics.mean(
            len(bson.encode(r.to_document(DAY, "morning", store.url_for))) for r in burst[:: max(1, len(burst) // 5000)]
        )
    return m


# --- figures ------------------------------------------------------------------------------------


def per_burst(m: Measured, args: argparse.Namespace) -> tuple[int, dict[str, float]]:
    """Photos in one burst, and how many of each unit a burst's wave has, in a steady state."""
    burst = args.users * args.photos_per_day // args.bursts_per_day
    daily = args.users * args.photos_per_day
    flushes = math.ceil(burst / m.flush_rows)
    waves = range(1, args.bursts_per_day + 1)
    # Wave k of a day lists the day before (all of it) and today so far, handled uploads included.
    pages = statistics.mean(listing_pages([daily, k * burst], S3BlobStore.page_size) for k in waves)
    # ... and reads the lake files of the day before and of today's earlier waves.
    scanned = statistics.mean((args.bursts_per_day + k - 1) * flushes for k in waves)
    return burst, {
        "photo": burst,
        "batch": batches(burst, m.workers, m.batch_size),
        "listing page": pages,
        "lake flush": flushes,
        "lake file scanned": scanned,
        "wave": 1,
    }


def request_rows(m: Measured, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """One row per (operation, object, client): its count, the unit it grows with, per photo, per burst."""
    counted: Counter[tuple[str, str, str]] = Counter((r.operation, r.target, r.client) for r in m.requests)
    steady: Counter[tuple[str, str, str]] = Counter((r.operation, r.target, r.client) for r in m.steady_requests)
    burst, units = per_burst(m, args)
    rows = []
    for key in sorted(set(counted) | set(steady), key=lambda k: (-counted[k], k)):
        operation, what, client = key
        unit = scale(operation, what)
        if unit == "lake file scanned":  # measured on the steady wave, per full file (the day before's)
            on_full = sum(1 for r in m.steady_requests if (r.operation, r.target, r.client) == key and FULL in r.path)
            per_unit = on_full / m.steady_units["full files scanned"]
            burst_count = per_unit * units[unit]
        elif unit == DELTA_LOG:  # the steady wave's (no flush) are fixed, the rest of the burst wave's per flush
            per_unit = max(0, counted[key] - steady[key]) / m.units["lake flush"] if m.units["lake flush"] else 0.0
            burst_count = steady[key] + per_unit * units["lake flush"]
        elif unit == "the table (once)":  # the first wave's lake was empty: not in a steady-state burst
            per_unit, burst_count = counted[key], 0.0
        elif unit == "wave":  # the steady wave's fixed cost (the first wave's lake was empty)
            per_unit = steady[key] if steady else counted[key]
            burst_count = per_unit
        else:
            per_unit = counted[key] / m.units[unit] if m.units[unit] else 0.0
            burst_count = per_unit * units[unit]
        rows.append(
            {
                "operation": operation,
                "object": what,
                "client": client,
                "scales_with": unit,
                "count_burst_wave": counted[key],
                "count_steady_wave": steady[key],
                "per_unit": per_unit,
                "per_photo": counted[key] / m.photos,
                "per_burst": burst_count,
            }
        )
    return rows, burst


def human(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def report(m: Measured, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    wave_bytes, wave_files, wave_rows = m.wave_parquet
    scale_bytes, scale_files, scale_rows = m.scale_parquet
    parquet_wave, parquet_scale = wave_bytes / wave_rows, scale_bytes / scale_rows
    per_photo = {
        "original": m.original_bytes,
        "processed": m.processed_bytes,
        "parquet": parquet_scale,
        "mongodb": m.bson_bytes,
    }
    photos_year = args.users * args.photos_per_day * YEAR_DAYS
    year = {name: value * photos_year for name, value in per_photo.items()}
    year["total"] = sum(year.values())
    rows, burst = request_rows(m, args)
    total_photo = sum(r["per_photo"] for r in rows)
    total_burst = sum(r["per_burst"] for r in rows)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"

    lines = [
        f"Machine: {machine}. Command: `.venv/bin/python bench/capacity.py` (from the repository root).",
        "",
        f"## Bytes per photo (12 MP phone JPEG, {m.size_class} class of `wave_bench.py`'s samples)",
        "",
        "| figure | bytes per photo | measured on |",
        "|---|---|---|",
        f"| original upload | {m.original_bytes:,.0f} | the {m.photos} uploads of the wave |",
        f"| processed grayscale JPEG (quality {m.jpeg_quality}) | {m.processed_bytes:,.0f} | "
        f"the {m.photos} images the wave wrote |",
        f"| Parquet, `images` row, small lake | {parquet_wave:,.0f} | the wave's lake: {wave_rows} rows in "
        f"{wave_files} file(s), {wave_bytes:,} B |",
        f"| Parquet, `images` row, at scale | {parquet_scale:,.0f} | {scale_rows:,} rows of one burst in "
        f"{scale_files} files of <= {m.flush_rows:,} rows, {scale_bytes:,} B |",
        f"| MongoDB `images` document (BSON, indexes extra) | {m.bson_bytes:,.0f} | `bson.encode(to_document())` "
        f"of the wave's rows (synthetic rows at scale: {m.bson_scale_bytes:,.0f}) |",
        f"| **total** | **{sum(per_photo.values()):,.0f}** | |",
        "",
        "Other size classes of the samples (mean of 3 photos each), processed at the same quality:",
        "",
        "| class | original | processed | processed / original |",
        "|---|---|---|---|",
        *(f"| {label} | {orig:,.0f} | {proc:,.0f} | {proc / orig:.2f} |" for label, (orig, proc) in m.by_class.items()),
        "",
        f"## Storage per year: {args.users:,} users x {args.photos_per_day} photos a day x {YEAR_DAYS} days "
        f"= {photos_year:,} photos",
        "",
        "| store | per year | per day |",
        "|---|---|---|",
        *(
            f"| {name} | {human(value)} | {human(value / YEAR_DAYS)} |"
            for name, value in (
                ("originals (object store)", year["original"]),
                ("processed images (object store)", year["processed"]),
                ("Parquet lake, `images` table", year["parquet"]),
                ("MongoDB `images` documents (BSON; indexes, replicas extra)", year["mongodb"]),
                ("**total**", year["total"]),
            )
        ),
        "",
        f"## Object-store requests: a wave of {m.photos} uploads on S3 (moto on 127.0.0.1), scaled to a burst "
        f"of {burst:,} photos",
        "",
        f"Wave: {m.workers} workers, batches of up to {m.batch_size} ({m.units['batch']} batches here), "
        f"lake flushes every {m.flush_rows:,} rows; blobs and lake both on S3. Uploads: {m.upload_seconds:.1f} s, "
        f"wave: {m.wave_seconds:.1f} s; steady wave with nothing new: {m.steady_seconds:.1f} s.",
        "",
        "| operation | object | client | grows with | in the burst's wave | in a wave with nothing new "
        "| per unit | per photo (this wave) | per burst (projected) |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['operation']} | {r['object']} | {r['client']} | {r['scales_with']} | {r['count_burst_wave']} "
            f"| {r['count_steady_wave']} | {r['per_unit']:.2f} | {r['per_photo']:.3f} | {r['per_burst']:,.0f} |"
            for r in rows
        ),
        f"| **total** | | | | {len(m.requests)} | {len(m.steady_requests)} | | **{total_photo:.3f}** "
        f"| **{total_burst:,.0f}** ({total_burst / burst:.3f} per photo) |",
        "",
        "Units of a burst (steady state: every day alike): "
        + ", ".join(f"{unit} x {value:,.1f}" for unit, value in per_burst(m, args)[1].items())
        + ".",
        "",
        f"boto3's own `before-send` count {'agrees with' if m.boto3_agrees else 'DIFFERS from'} the server's count "
        f"of boto3 requests: {dict(sorted(m.boto3_counts.items()))}"
        + ("" if m.boto3_agrees else f" against {dict(sorted(m.server_boto3_counts.items()))}")
        + ".",
        "",
        "## What the figures are",
        "",
        f"- **Original upload**: the mean size of the uploaded photos: 12 MP ({4032}x{3024}) JPEGs made by "
        "`service.samples` (a photo-like scene with sensor noise), the class `wave_bench.py` uses for its wave "
        "(3 distinct photos, repeated). Change with `--size-class`.",
        "- **Processed JPEG**: the grayscale image the wave writes beside the upload (`processed/...`), at "
        "`GRAYWAVE_JPEG_QUALITY`; its size follows the original's noise (see the classes table).",
        "- **Parquet per row**: `images` files' bytes / rows (zstd, sorted by user, row groups of 1,024). A wave "
        f"writes one file per {m.flush_rows:,} rows, so at scale the per-row cost is that of full files; a small "
        "wave pays more per row (the file's footer and schema). The small lake's figure is lower all the same: its "
        "600 rows come from 3 distinct photos, so their histograms and sizes repeat and compress away; the rows at "
        "scale have a histogram and sizes of their own each, as real photos do, and are the figure used. Rejects (`rejects` table) and the daily "
        "analytics tables (a row per user per day, not per photo) are not included.",
        "- **MongoDB**: the BSON of one `images` document (`to_document`, with `image_url`/`processed_url` as "
        f"`s3://{BUCKET}/{BLOBS}/...`). On disk WiredTiger compresses documents (snappy) but adds the `_id`, "
        "`user_time` and `day_status` indexes and any replicas: not measured here.",
        f"- **Storage per year**: per-photo bytes x {photos_year:,} photos, decimal units; nothing is ever deleted.",
        "- **Requests**: every HTTP request that reached the S3 server, by S3 operation and by what it touched. "
        "The phone's presigned POST is the first request of every photo (1 per photo by design: the app uploads "
        "straight to S3). Then the wave: a GetObject of the upload and a PutObject of the processed image per "
        "photo; a HeadBucket per batch (each batch first checks that its machine reaches the store); "
        f"ListObjectsV2 pages of {S3BlobStore.page_size} keys over the upload prefixes of the day before and of "
        "the day (already-handled uploads included, which is why a steady-state burst lists more pages than it "
        "has photos / 1,000); a HeadObject of each recorded upload after its flush (a delete that raced the "
        "wave wins: `Backends.drop_deleted`); per lake flush a Parquet PutObject (delta-rs) and the Delta log's "
        "requests of the commit (the log listed and read from its last checkpoint each time the table is opened, "
        "the new log entry written with `If-None-Match`, no lock); per wave the Delta log reads that open "
        "`images` and `rejects` (measured on the wave with nothing new); Polars' GETs of every lake file of the "
        "partitions that can hold the wave's uploads (to skip handled ones), measured per full file on the "
        "wave with nothing new. The Delta log's reads grow with the commits since the table's last checkpoint "
        "(each opening GETs every commit file after it; delta-rs writes a checkpoint every 100 commits, "
        "maintenance one a night): this lake has only a few.",
        "- **Per burst**: each row's count per unit x the burst's units. A draining wave (`--settle`) lists "
        "the upload prefixes again at every poll; those listings are not in this projection.",
    ]
    figures = {
        "machine": machine,
        "size_class": m.size_class,
        "bytes_per_photo": per_photo | {"parquet_small_lake": parquet_wave},
        "bytes_by_class": {k: {"original": o, "processed": p} for k, (o, p) in m.by_class.items()},
        "parquet": {
            "wave": {"bytes": wave_bytes, "files": wave_files, "rows": wave_rows},
            "scale": {"bytes": scale_bytes, "files": scale_files, "rows": scale_rows},
        },
        "bson_bytes_synthetic": m.bson_scale_bytes,
        "storage_per_year_bytes": year,
        "parameters": vars(args),
        "wave": {
            "photos": m.photos,
            "workers": m.workers,
            "batch_size": m.batch_size,
            "units": m.units,
            "seconds": m.wave_seconds,
            "upload_seconds": m.upload_seconds,
            "steady_seconds": m.steady_seconds,
        },
        "burst_photos": burst,
        "burst_units": per_burst(m, args)[1],
        "requests": rows,
        "requests_per_photo": total_photo,
        "requests_per_burst": total_burst,
        "boto3_count_agrees": m.boto3_agrees,
    }
    return "\n".join(lines), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--photos-per-day", type=int, default=2, help="per user (default: 2, one per burst)")
    parser.add_argument("--bursts-per-day", type=int, default=2)
    parser.add_argument("--photos", type=int, default=600, help="uploads in the measured S3 wave")
    parser.add_argument("--lake-rows", type=int, default=100_000, help="rows of the synthetic lake at scale")
    parser.add_argument("--size-class", choices=list(SIZES), default="2 MB")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of Markdown")
    args = parser.parse_args()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the figures only (--json)
        measured = measure(args)
    text, figures = report(measured, args)
    figures["seconds"] = time.perf_counter() - started
    print(json.dumps(figures, indent=2, default=str) if args.json else text)
    print(f"capacity.py took {figures['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
