"""The wave, without Prefect: every pending upload of a day (and of the day before) processed once.

A wave lists the uploads of its days (``records.wave_upload_days``), leaves out what the lake
already holds (in ``images`` or ``rejects``), splits the rest into batches and records the rows as
batches finish. Rows are flushed every ``GRAYWAVE_LAKE_FLUSH_ROWS`` rows and when the wave ends or
fails, so a crash loses at most the rows in the buffer, whose uploads the next run processes again
(processed images are rewritten). With MongoDB configured the rows are upserted there just before
they go to the lake.

Who runs the batches is the caller's choice (``BatchRunner``): ``flows.wave`` submits each one as
a Prefect task; ``run_batches_in_threads`` runs them on local threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date
from itertools import islice

from graywave.config import Settings
from graywave.errors import BadKey, RejectReason
from graywave.kernels import select_device
from graywave.records import ImageRecord, RejectRecord, handling_days, wave_upload_days
from graywave.service.backends import Backends
from graywave.service.batch import (
    BatchResult,
    Upload,
    luma_batch_codec,
    process_uploads,
    process_uploads_batched,
    reject_record,
)
from graywave.service.progress import WaveProgress
from graywave.storage.blobs import BlobStore, open_blob_store
from graywave.storage.lake import Lake
from graywave.storage.layout import parse_upload_key, uploads_prefix

TASKS_PER_WORKER = 4
"""Aim for this many batches per worker, so that the last batches finish close together."""

BatchRunner = Callable[[list[Sequence[Upload]], Settings], Iterator[BatchResult]]
"""Runs batches (``process_batch`` on each, at most ``settings.workers`` at once) and yields their
results as they finish."""


@dataclass(frozen=True)
class WavePlan:
    pending: list[Upload]
    bad_keys: list[RejectRecord]
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


def plan_wave(store: BlobStore, lake: Lake, day: date) -> WavePlan:
    """The uploads a wave of ``day`` has to handle, and how many it can skip."""
    upload_days = wave_upload_days(day)
    partitions = handling_days(upload_days[0], upload_days[-1])
    handled = lake.source_keys("images", partitions) | lake.source_keys("rejects", partitions)
    pending: list[Upload] = []
    bad_keys: list[RejectRecord] = []
    skipped = 0
    for upload_day in upload_days:
        for blob in store.list(uploads_prefix(upload_day)):
            if blob.key in handled:
                skipped += 1
                continue
            try:
                pending.append(Upload(parse_upload_key(blob.key), blob))
            except BadKey as error:
                bad_keys.append(reject_record(blob.key, None, blob, RejectReason.BAD_KEY, str(error)))
    return WavePlan(pending, bad_keys, skipped)


def split_batches(uploads: Sequence[Upload], workers: int, max_size: int) -> list[Sequence[Upload]]:
    size = max(1, min(max_size, math.ceil(len(uploads) / (workers * TASKS_PER_WORKER))))
    return [uploads[i : i + size] for i in range(0, len(uploads), size)]


def process_batch(uploads: Sequence[Upload], settings: Settings) -> BatchResult:
    """One batch on this machine's device: the GPU batch path where nvImageCodec is there, else the CPU path."""
    store = open_blob_store(settings.blob_url, settings.s3_endpoint_url)
    store.check()  # a machine (a Dask worker) that cannot reach the store fails the batch
    device = select_device(settings.device)
    codec = luma_batch_codec(device)
    if codec is None:
        return process_uploads(uploads, store, settings, device)
    return process_uploads_batched(uploads, store, settings, device, codec)


def run_batches_in_threads(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
    """A ``BatchRunner`` on local threads (the kernels release the GIL), at most ``workers`` at once."""
    queue = iter(batches)
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="graywave-batch") as pool:
        in_flight: set[Future[BatchResult]] = {
            pool.submit(process_batch, batch, settings) for batch in islice(queue, settings.workers)
        }
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for finished in done:
                following = next(queue, None)
                if following is not None:
                    in_flight.add(pool.submit(process_batch, following, settings))
                yield finished.result()


class Recorder:
    """Rows waiting to be recorded (``Backends.record``), flushed every ``flush_rows`` rows."""

    def __init__(self, backends: Backends, day: date, wave: str, flush_rows: int):
        self.backends, self.day, self.wave, self.flush_rows = backends, day, wave, flush_rows
        self.images: list[ImageRecord] = []
        self.rejects: list[RejectRecord] = []

    def add(self, images: Sequence[ImageRecord], rejects: Sequence[RejectRecord]) -> None:
        self.images += images
        self.rejects += rejects
        if len(self.images) + len(self.rejects) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        self.backends.record(self.day, self.wave, self.images, self.rejects)
        self.images, self.rejects = [], []


def run_wave(
    settings: Settings,
    day: date,
    name: str,
    *,
    run_batches: BatchRunner = run_batches_in_threads,
    log: Callable[[str], None] = print,
) -> WaveSummary:
    """Hold the lake, plan the wave, run its batches with ``run_batches`` and record every row."""
    started = time.perf_counter()
    with Backends.open(settings) as backends, backends.lake.exclusive(settings.lock_ttl_s):
        if backends.catalog is not None:
            backends.catalog.ensure_indexes()
        plan = plan_wave(backends.blobs, backends.lake, day)
        log(
            f"wave {name} of {day}: {len(plan.pending)} pending, {plan.skipped} already handled, "
            f"{len(plan.bad_keys)} bad keys"
        )
        recorder = Recorder(backends, day, name, settings.lake_flush_rows)
        recorder.add([], plan.bad_keys)
        processed, rejected, pixels = 0, len(plan.bad_keys), 0
        batches = split_batches(plan.pending, settings.workers, settings.batch_size)
        try:
            with WaveProgress(len(plan.pending), f"wave {name} {day}", log) as progress:
                for result in run_batches(batches, settings):
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
    log(summary.line())
    return summary
