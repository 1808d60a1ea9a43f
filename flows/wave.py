"""The wave: every pending upload of a day (and of the day before) processed once, in batches.

    graywave wave run --date 2026-11-25 --name morning

A wave lists ``uploads/<day-1>/`` and ``uploads/<day>/``, leaves out what the lake already holds
(in ``images`` or ``rejects``), splits the rest into batches (one Prefect task per batch, at most
``workers`` running at once) and appends the rows to the lake as batches finish. Rows are flushed
every ``GRAYWAVE_LAKE_FLUSH_ROWS`` rows and when the wave ends or fails, so a crash loses at most the
rows in the buffer, whose uploads the next run processes again (processed images are rewritten).
With MongoDB configured the rows are upserted there just before they go to the lake.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import islice
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

from graywave.backends import Backends
from graywave.config import Settings, validate_wave_name
from graywave.flows.batch import (
    BatchResult,
    Upload,
    luma_batch_codec,
    process_uploads,
    process_uploads_batched,
    reject_row,
)
from graywave.flows.progress import WaveProgress
from graywave.kernels import select_device
from graywave.kernels.codecs import RejectReason
from graywave.storage.blobs import BlobStore, open_blob_store
from graywave.storage.lake import Lake
from graywave.storage.layout import BadKey, parse_upload_key, uploads_prefix

TASKS_PER_WORKER = 4
"""Aim for this many batches per worker, so that the last batches finish close together."""


@dataclass(frozen=True)
class WavePlan:
    pending: list[Upload]
    bad_keys: list[dict[str, Any]]
    skipped: int


@dataclass
class WaveSummary:
    date: str
    wave: str
    listed: int
    processed: int
    rejected: int
    skipped: int
    seconds: float
    megapixels: float

    @property
    def images_per_s(self) -> float:
        return (self.processed + self.rejected) / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"wave {self.wave} of {self.date}: {self.processed} processed, {self.rejected} rejected, "
            f"{self.skipped} skipped (already handled) in {self.seconds:.1f} s "
            f"({self.images_per_s:.1f} images/s, {self.megapixels / self.seconds if self.seconds else 0:.0f} MP/s)"
        )


def wave_days(day: date) -> tuple[date, date]:
    """The upload days a wave of ``day`` looks at: the day before and the day itself."""
    return day - timedelta(days=1), day


def plan_wave(store: BlobStore, lake: Lake, day: date) -> WavePlan:
    # An upload of day X is handled by a wave of X or X+1, so those partitions hold every handled key.
    partitions = (day - timedelta(days=1), day, day + timedelta(days=1))
    handled = lake.source_keys("images", partitions) | lake.source_keys("rejects", partitions)
    pending: list[Upload] = []
    bad_keys: list[dict[str, Any]] = []
    skipped = 0
    for upload_day in wave_days(day):
        for blob in store.list(uploads_prefix(upload_day)):
            if blob.key in handled:
                skipped += 1
                continue
            try:
                pending.append(Upload(parse_upload_key(blob.key), blob))
            except BadKey as error:
                bad_keys.append(reject_row(blob.key, None, blob, RejectReason.BAD_KEY, str(error)))
    return WavePlan(pending, bad_keys, skipped)


def split_batches(uploads: Sequence[Upload], workers: int, max_size: int) -> list[Sequence[Upload]]:
    size = max(1, min(max_size, math.ceil(len(uploads) / (workers * TASKS_PER_WORKER))))
    return [uploads[i : i + size] for i in range(0, len(uploads), size)]


@task(name="process-batch", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=2)
def process_batch(uploads: Sequence[Upload], settings: Settings) -> BatchResult:
    store = open_blob_store(settings.blob_url, settings.s3_endpoint_url)
    device = select_device(settings.device)
    codec = luma_batch_codec(device)
    if codec is None:
        return process_uploads(uploads, store, settings, device)
    return process_uploads_batched(uploads, store, settings, device, codec)


def _run_batches(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
    """Results as batches finish, with at most ``settings.workers`` batches in flight."""
    queue = iter(batches)
    in_flight: list[PrefectFuture[BatchResult]] = [
        process_batch.submit(batch, settings) for batch in islice(queue, settings.workers)
    ]
    while in_flight:
        finished = next(as_completed(in_flight))
        in_flight.remove(finished)
        following = next(queue, None)
        if following is not None:
            in_flight.append(process_batch.submit(following, settings))
        yield finished.result()


class _Recorder:
    """Rows waiting to be recorded (``Backends.record``), flushed every ``flush_rows`` rows."""

    def __init__(self, backends: Backends, day: date, wave: str, flush_rows: int):
        self.backends, self.day, self.wave, self.flush_rows = backends, day, wave, flush_rows
        self.images: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []

    def add(self, images: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> None:
        self.images += images
        self.rejects += rejects
        if len(self.images) + len(self.rejects) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        self.backends.record(self.day, self.wave, self.images, self.rejects)
        self.images, self.rejects = [], []


def run_wave(settings: Settings, day: date, name: str) -> WaveSummary:
    """The body of the wave flow: it must run inside a Prefect flow run (it submits tasks)."""
    logger = get_run_logger()
    started = time.perf_counter()
    with Backends.open(settings) as backends, backends.lake.exclusive(settings.lock_ttl_s):
        if backends.catalog is not None:
            backends.catalog.ensure_indexes()
        plan = plan_wave(backends.blobs, backends.lake, day)
        logger.info(
            "wave %s of %s: %d pending, %d already handled, %d bad keys",
            name, day, len(plan.pending), plan.skipped, len(plan.bad_keys),
        )
        recorder = _Recorder(backends, day, name, settings.lake_flush_rows)
        recorder.add([], plan.bad_keys)
        processed, rejected, pixels = 0, len(plan.bad_keys), 0
        batches = split_batches(plan.pending, settings.workers, settings.batch_size)
        try:
            with WaveProgress(len(plan.pending), f"wave {name} {day}", logger.info) as progress:
                for result in _run_batches(batches, settings):
                    recorder.add(result.images, result.rejects)
                    processed += len(result.images)
                    rejected += len(result.rejects)
                    pixels += result.pixels
                    progress.advance(len(result.images) + len(result.rejects))
        finally:
            recorder.flush()
    summary = WaveSummary(
        date=day.isoformat(),
        wave=name,
        listed=len(plan.pending) + len(plan.bad_keys) + plan.skipped,
        processed=processed,
        rejected=rejected,
        skipped=plan.skipped,
        seconds=time.perf_counter() - started,
        megapixels=pixels / 1e6,
    )
    logger.info(summary.line())
    return summary


@flow(name="graywave-wave", log_prints=False)
def wave_flow(day: date | None = None, name: str = "manual") -> WaveSummary:
    """Process the pending uploads of ``day`` (default: today in GRAYWAVE_TIMEZONE) and the day before."""
    settings = Settings()
    return run_wave(settings, day or settings.today(), validate_wave_name(name))
