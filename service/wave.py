"""The wave, without Prefect: every pending upload of a day (and of the day before) processed once.

A wave lists the uploads of its days (``records.wave_upload_days``), leaves out what the lake
already holds (in ``images`` or ``rejects``), splits the rest into batches and records the rows as
batches finish. Rows are flushed every ``GRAYWAVE_LAKE_FLUSH_ROWS`` rows and when the wave ends or
fails, so a crash loses at most the rows in the buffer, whose uploads the next run processes again
(processed images are rewritten). With MongoDB configured the rows are upserted there just before
they go to the lake.

Who runs the batches is the caller's choice (``BatchRunner``): ``flows.wave`` submits each one as
a Prefect task; ``run_batches_in_threads`` runs them on local threads.

A wave given a ``Drain`` keeps collecting: each time its pending list is done it lists again and
processes, in a new round, what arrived meanwhile; it stops once nothing new has arrived for
``settle_s`` seconds, or after ``max_duration_s``. Two listings start at least ``poll_s`` apart (a
round that took longer lists again at once), and a draining wave also flushes its rows once the
oldest has waited ``poll_s``, or when a listing finds nothing new: a trickle of uploads (one a
second) makes a round and a lake commit every ``poll_s`` or so, not one per upload. Uploads that
arrive after it stopped are left for the next wave.

Every upload is handled once across a wave's rounds, and across waves: recording is an insert-only
MERGE by source key (``Lake.record``), so two waves of one day that run at once (a manual run
during a scheduled one) or a rerun after a crash record each upload once, whatever the timing. No
lock is taken: the API writes while a wave drains.

Once per version of the original: a row records the size and the time (S3's ``LastModified``, a
file's modification time) of the original it was made from, and an upload whose listing no longer
matches them (overwritten after it was processed, through a presigned POST still valid, or by hand
on the local folder) is processed again, and its new row replaces the old one (``Backends.rerecord``:
a MERGE that updates by source key, idempotent too). A processed image whose new original is rejected
loses its old JPEG. Two writers that record different versions leave the row of one: if it is not
the version the store holds, the next wave's listing sees that and processes it again.
"""

from __future__ import annotations

import contextlib
import math
import socket
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from graywave.config import Settings
from graywave.errors import BackendUnavailable, BadKey, DeviceUnavailable, InvalidInput, RejectReason
from graywave.kernels import select_device
from graywave.records import ImageRecord, RejectRecord, handling_days, wave_upload_days
from graywave.service import batch as batch_module
from graywave.service.backends import Backends
from graywave.service.batch import (
    BatchResult,
    Fallback,
    Upload,
    reject_record,
)
from graywave.service.progress import WaveProgress
from graywave.service.scheduling import bounded
from graywave.storage.blobs import BlobInfo, BlobStore, open_blob_store
from graywave.storage.lake import Lake
from graywave.storage.layout import parse_upload_key, uploads_prefix

REPORTED_REJECTS = 1000
"""How many rejects a wave's summary lists one by one (every one is counted by reason)."""
TASKS_PER_WORKER = 4
"""Aim for this many batches per worker, so that the last batches finish close together."""
BatchRunner = Callable[[list[Sequence[Upload]], Settings], Iterator[BatchResult]]
"""Runs batches (``process_batch`` on each, at most ``settings.workers`` at once) and yields their
results as they finish."""


@dataclass(frozen=True)
class Drain:
    """How a wave keeps collecting after its first round (the settle window)."""

    settle_s: float
    """Stop once nothing new has arrived for this long."""
    max_duration_s: float
    """Stop listing this long after the wave started, whatever still arrives."""
    poll_s: float = 10.0
    """The least time between the starts of two listings (an idle wave lists this often), and the
    longest a row waits in the buffer while more arrive."""

    def __post_init__(self) -> None:
        if self.settle_s < 0 or self.max_duration_s < 0 or self.poll_s <= 0:
            raise InvalidInput(
                "the settle window and the maximum duration cannot be negative, the poll interval must be positive"
            )


@dataclass
class SettleWindow:
    """Where a draining wave stands in its settle window, on the wave's clock: when to list next,
    and when to stop. ``run_wave`` follows it, and so does the burst simulator (``bench/burst.py``)."""

    drain: Drain
    opened: float
    """When the wave listed first."""
    listed: float
    """When the last listing started."""
    last_new: float
    """When a listing last found something new (the first listing counts as new)."""
    idle: bool = False
    """Whether the last listing found nothing new."""

    @classmethod
    def open(cls, drain: Drain, at: float, *, found: bool) -> SettleWindow:
        """The window after a wave's first listing, started ``at``."""
        return cls(drain, opened=at, listed=at, last_new=at, idle=not found)

    def record_listing(self, at: float, *, found: bool) -> None:
        self.listed, self.idle = at, not found
        if found:
            self.last_new = at

    def closed(self, now: float) -> bool:
        """Past the maximum duration, or nothing new for ``settle_s`` (seen by a listing that found
        nothing: after a round the wave always lists once more, for what arrived while it ran)."""
        return now - self.opened >= self.drain.max_duration_s or (
            self.idle and now - self.last_new >= self.drain.settle_s
        )

    def next_listing(self) -> float:
        """``poll_s`` after the last listing started (at once when that has passed); while idle, no
        later than the settle window's end, so that the last listing closes it on time; never after the
        maximum duration."""
        due = self.listed + self.drain.poll_s
        if self.idle:
            due = min(due, self.last_new + self.drain.settle_s)
        return min(due, self.opened + self.drain.max_duration_s)


@dataclass(frozen=True)
class Recorded:
    """What the lake holds of a handled upload: the size and the time of the original its row was
    made from (its version), the partition of the row and whether it is a processed image."""

    size: int | None
    modified: datetime | None
    day: date | None
    image: bool

    @classmethod
    def of(cls, record: ImageRecord | RejectRecord, day: date | None) -> Recorded:
        return cls(record.source_bytes, record.uploaded_at, day, isinstance(record, ImageRecord))

    def matches(self, blob: BlobInfo) -> bool:
        """Whether ``blob`` is the original this row was made from (not overwritten since)."""
        return self.size == blob.size and self.modified == blob.modified


_TWO_ROWS = Recorded(None, None, None, image=True)
"""An upload with a row in both tables (a replacement that stopped half-way): never a match, so it is
processed again and the replacement removes the other row."""


@dataclass(frozen=True)
class WavePlan:
    pending: list[Upload]
    bad_keys: list[RejectRecord]
    skipped: int
    changed: dict[str, Recorded] = field(default_factory=dict)
    """The uploads of ``pending`` and ``bad_keys`` that have a row already, made from an earlier
    version of their original: their new rows replace those."""

    @property
    def source_keys(self) -> set[str]:
        return {upload.source_key for upload in self.pending} | {reject.source_key for reject in self.bad_keys}

    def __bool__(self) -> bool:
        return bool(self.pending or self.bad_keys)

    def counts(self) -> str:
        return f"{len(self.pending)} pending, {self.skipped} already handled, {len(self.bad_keys)} bad keys"


@dataclass(frozen=True)
class RoundSummary:
    """One listing of the store and the processing of what it found."""

    number: int
    new: int
    processed: int
    rejected: int
    seconds: float

    def line(self) -> str:
        return (
            f"round {self.number}: {self.new} new, {self.processed} processed, {self.rejected} rejected "
            f"in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class Latency:
    """Seconds from upload (the blob's modification time) to processed (its row back in the wave)."""

    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency | None:
        if not seconds:
            return None
        if len(seconds) == 1:
            return cls(seconds[0], seconds[0], seconds[0])
        cuts = statistics.quantiles(seconds, n=100, method="inclusive")
        return cls(p50=cuts[49], p95=cuts[94], max=max(seconds))

    def line(self) -> str:
        return f"upload to processed: p50 {self.p50:.1f} s, p95 {self.p95:.1f} s, max {self.max:.1f} s"


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
    rounds: list[RoundSummary] = field(default_factory=list)
    latency: Latency | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    """Rejects by reason code."""
    rejects: list[RejectRecord] = field(default_factory=list)
    """The first ``REPORTED_REJECTS`` rejects, in the order they were handled."""
    recorded: int = 0
    """Rows the wave's commits inserted into the lake (``images`` and ``rejects``): fewer than it
    handled when another writer (a concurrent wave, the API) had recorded some of them already."""
    commits: int = 0
    """The lake commits (flushes) the wave made."""
    fallbacks: dict[str, int] = field(default_factory=dict)
    """What the device's batch codec did not do and the CPU did, by ``stage: reason`` (an upload
    whose decode and encode both fell back counts once in each)."""
    fell_back: int = 0
    """Uploads with at least one fallback."""

    @property
    def processing_s(self) -> float:
        """Seconds spent processing rounds: the wave's time less its waits for more uploads (a
        settle window's idle listings)."""
        return sum(r.seconds for r in self.rounds) if self.rounds else self.seconds

    @property
    def images_per_s(self) -> float:
        """Uploads handled per second while processing (a settle window's idle time left out)."""
        return (self.processed + self.rejected) / self.processing_s if self.processing_s else 0.0

    @property
    def megapixels_per_s(self) -> float:
        return self.megapixels / self.processing_s if self.processing_s else 0.0

    def rate(self) -> str:
        """The wave's pace: images and megapixels per second while processing."""
        busy = f"{self.processing_s:.1f} s processing: " if len(self.rounds) > 1 else ""
        return f"{busy}{self.images_per_s:.1f} images/s, {self.megapixels_per_s:.0f} MP/s"

    def line(self) -> str:
        rounds = f" in {len(self.rounds)} rounds" if len(self.rounds) > 1 else ""
        latency = f"; {self.latency.line()}" if self.latency else ""
        fell_back = f", {self.fell_back} fell back to the CPU" if self.fallbacks else ""
        return (
            f"wave {self.wave} of {self.date}: {self.processed} processed{fell_back}, {self.rejected} rejected, "
            f"{self.skipped} skipped (already handled){rounds} in {self.seconds:.1f} s ({self.rate()})"
            f"{latency}"
        )


RECORDED_COLUMNS = ["source_key", "source_bytes", "uploaded_at", "date"]


def handled_uploads(lake: Lake, day: date) -> dict[str, Recorded]:
    """The uploads a wave of ``day`` may see that the lake holds as images or rejects, by source key,
    with the version of the original each row was made from."""
    upload_days = wave_upload_days(day)
    partitions = handling_days(upload_days[0], upload_days[-1])
    handled: dict[str, Recorded] = {}
    for table in ("images", "rejects"):
        rows = lake.scan(table, days=partitions, columns=RECORDED_COLUMNS).to_pydict()
        for key, size, modified, partition in zip(*(rows[name] for name in RECORDED_COLUMNS), strict=True):
            handled[key] = _TWO_ROWS if key in handled else Recorded(size, modified, partition, table == "images")
    return handled


def plan_wave(store: BlobStore, lake: Lake, day: date, handled: Mapping[str, Recorded] | None = None) -> WavePlan:
    """The uploads a wave of ``day`` has to handle, and how many it can skip: those the lake holds
    (or ``handled`` when given: a draining wave's own record of what it has seen) made from the
    original as the store lists it now. One whose original changed since is handled again
    (``WavePlan.changed``)."""
    upload_days = wave_upload_days(day)
    if handled is None:
        handled = handled_uploads(lake, day)
    pending: list[Upload] = []
    bad_keys: list[RejectRecord] = []
    changed: dict[str, Recorded] = {}
    skipped = 0
    for upload_day in upload_days:
        for blob in store.list(uploads_prefix(upload_day)):
            recorded = handled.get(blob.key)
            if recorded is not None:
                if recorded.matches(blob):
                    skipped += 1
                    continue
                changed[blob.key] = recorded
            try:
                key = parse_upload_key(blob.key)
            except BadKey as error:
                bad_keys.append(reject_record(blob.key, None, blob, RejectReason.BAD_KEY, str(error)))
                continue
            if blob.unusable is not None:  # a link, a FIFO, an undecodable name: rejected unread
                reason, detail = blob.unusable
                bad_keys.append(reject_record(blob.key, key.user_id, blob, reason, detail))
                continue
            pending.append(Upload(key, blob))
    return WavePlan(pending, bad_keys, skipped, changed)


def split_batches(uploads: Sequence[Upload], workers: int, max_size: int) -> list[Sequence[Upload]]:
    size = max(1, min(max_size, math.ceil(len(uploads) / (workers * TASKS_PER_WORKER))))
    return [uploads[i : i + size] for i in range(0, len(uploads), size)]


def process_batch(uploads: Sequence[Upload], settings: Settings) -> BatchResult:
    """One batch on this machine's device, with the device's batch codec (``batch.process_uploads``)."""
    store = open_blob_store(settings.blob_url, settings.s3_endpoint_url, s3_region=settings.s3_region)
    try:
        store.check()  # a machine (a Dask worker) that cannot read the store fails the batch
        device = select_device(settings.device)  # and one without the GPU that GRAYWAVE_DEVICE=gpu asks for
    except (BackendUnavailable, DeviceUnavailable) as error:
        raise type(error)(f"on {socket.gethostname()}: {error}") from error
    return batch_module.process_uploads(uploads, store, settings, device)  # looked up here: tests stand in for it


def drain_of(settings: Settings, settle_s: float | None = None, max_duration_s: float | None = None) -> Drain:
    """The settle window of the settings, with what the caller overrides."""
    return Drain(
        settle_s=settings.wave_settle_s if settle_s is None else settle_s,
        max_duration_s=settings.wave_max_duration_s if max_duration_s is None else max_duration_s,
        poll_s=settings.wave_poll_s,
    )


def run_batches_in_threads(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
    """A ``BatchRunner`` on local threads (the kernels release the GIL): results as batches finish,
    at most ``workers`` at once (``scheduling.bounded``)."""
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="graywave-batch") as pool:

        def submit(batch: Sequence[Upload]) -> Future[BatchResult]:
            return pool.submit(process_batch, batch, settings)

        for finished in bounded(submit, batches, settings.workers, as_completed):
            yield finished.result()


class Recorder:
    """Rows waiting to be recorded (``Backends.record``), flushed every ``flush_rows`` rows and once
    the oldest has waited ``max_wait_s`` on ``clock``.

    Each flush is a lake commit (a new file per table), so rows that come a few at a time (a draining wave's rounds
    under a trickle of uploads) are gathered for a while rather than written one small file each;
    ``max_wait_s`` bounds how late the lake shows them.
    """

    def __init__(
        self,
        backends: Backends,
        day: date,
        wave: str,
        flush_rows: int,
        *,
        max_wait_s: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        flow_run: str | None = None,
    ):
        self.backends, self.day, self.wave, self.flush_rows = backends, day, wave, flush_rows
        self.max_wait_s, self.clock = max_wait_s, clock
        self.images: list[ImageRecord] = []
        self.rejects: list[RejectRecord] = []
        self.replacing: dict[str, Recorded] = {}
        """The rows of the buffer that replace rows made from an earlier version of their original."""
        self.oldest: float | None = None
        """When the oldest row in the buffer came."""
        self.flow_run = flow_run
        self.recorded = 0
        """Rows the flushes inserted so far."""
        self.commits = 0

    def add(
        self,
        images: Sequence[ImageRecord],
        rejects: Sequence[RejectRecord],
        changed: Mapping[str, Recorded] | None = None,
    ) -> None:
        """Buffer rows; those of ``changed``'s uploads replace the rows they have (their original
        was overwritten since), the others are recorded where the lake has none yet."""
        if self.oldest is None and (images or rejects):
            self.oldest = self.clock()
        if changed:
            keys = {r.source_key for r in images} | {r.source_key for r in rejects}
            again = keys & changed.keys()
            if again:  # a row of an earlier version may still wait here (an earlier round): this one replaces it
                self.images = [r for r in self.images if r.source_key not in again]
                self.rejects = [r for r in self.rejects if r.source_key not in again]
                for key in again:  # what the lake holds stays what it is replaced from
                    self.replacing.setdefault(key, changed[key])
        self.images += images
        self.rejects += rejects
        if len(self.images) + len(self.rejects) >= self.flush_rows:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush if the oldest row has waited ``max_wait_s``."""
        if self.oldest is not None and self.clock() - self.oldest >= self.max_wait_s:
            self.flush()

    def flush(self) -> None:
        replacing = self.replacing
        new_images = [r for r in self.images if r.source_key not in replacing]
        new_rejects = [r for r in self.rejects if r.source_key not in replacing]
        if new_images or new_rejects:
            self.recorded += self.backends.record(self.day, self.wave, new_images, new_rejects, flow_run=self.flow_run)
            self.commits += 1
        if replacing:
            self._replace(
                [r for r in self.images if r.source_key in replacing],
                [r for r in self.rejects if r.source_key in replacing],
            )
        self.images, self.rejects, self.replacing, self.oldest = [], [], {}, None

    def _replace(self, images: list[ImageRecord], rejects: list[RejectRecord]) -> None:
        """The rows of uploads whose original changed, in place of their old rows (one MERGE per
        table, in the old rows' partitions); a processed image now rejected loses its old JPEG."""
        days = {key: recorded.day for key, recorded in self.replacing.items() if recorded.day is not None}
        self.backends.rerecord(self.wave, images, rejects, days=days, flow_run=self.flow_run)
        self.recorded += len(images) + len(rejects)
        self.commits += 1
        for reject in rejects:
            if self.replacing[reject.source_key].image and reject.user_id is not None:
                with contextlib.suppress(BadKey):
                    self.backends.blobs.delete(parse_upload_key(reject.source_key).processed_key)


def run_wave(
    settings: Settings,
    day: date,
    name: str,
    *,
    drain: Drain | None = None,
    run_batches: BatchRunner = run_batches_in_threads,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
    flow_run: str | None = None,
    backends: Backends | None = None,
) -> WaveSummary:
    """Plan the wave, run its batches with ``run_batches`` and record every row;
    ``progress(handled, listed)`` after each batch, over every round.

    Without ``drain`` the wave makes one round: what was pending when it listed. With one it lists
    again after each round until the settle window closes (see ``Drain``, ``SettleWindow``).
    ``backends``: those of the caller's ``Graywave`` (``Waves.run``), left open; else the wave
    opens its own and closes them.
    """
    started = time.perf_counter()
    with Backends.open(settings) if backends is None else contextlib.nullcontext(backends) as backends:
        _prepare(backends, f"wave {name} of {day}", log)
        max_wait_s = math.inf if drain is None else drain.poll_s
        recorder = Recorder(
            backends, day, name, settings.lake_flush_rows, max_wait_s=max_wait_s, clock=clock, flow_run=flow_run
        )
        handled = handled_uploads(backends.lake, day)
        rounds = _Rounds(
            settings, day, name, recorder, run_batches, log, handled, log_rounds=drain is not None, progress=progress
        )

        def list_pending() -> WavePlan:
            return plan_wave(backends.blobs, backends.lake, day, rounds.handled)

        opened = clock()
        plan = list_pending()
        skipped = plan.skipped
        log(
            f"wave {name} of {day}: {plan.counts()}"
            + (f"; collecting until nothing new for {drain.settle_s:g} s" if drain else "")
        )
        try:
            rounds.run(plan)
            if drain is not None:
                _collect(SettleWindow.open(drain, opened, found=bool(plan)), rounds, list_pending, clock, sleep)
                log(f"wave {name} of {day}: stopped collecting after {clock() - opened:.0f} s")
        finally:
            recorder.flush()
    summary = rounds.summary(skipped, time.perf_counter() - started)
    log(summary.line())
    return summary


def _prepare(backends: Backends, label: str, log: Callable[[str], None]) -> None:
    """What a wave checks and finishes before it lists: the uploads' store is there (a missing
    folder or bucket fails the wave: never "0 processed"), deletes that stopped half-way are
    finished (no record outlives its original), the catalog is ready."""
    backends.blobs.check()
    finished = backends.finish_deletions()
    if finished:
        log(f"{label}: finished {finished} deletes that had stopped half-way")
    backends.catalog.prepare()


def _collect(
    window: SettleWindow,
    rounds: _Rounds,
    list_pending: Callable[[], WavePlan],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """The settle window after the first round: list when the window says, run a round of what is
    new, until it closes. A listing that finds nothing flushes the rows: no more are coming to
    share their commit, and the window may stay open for ``settle_s`` yet."""
    while not window.closed(clock()):
        wait = window.next_listing() - clock()
        if wait > 0:
            sleep(wait)
        listed = clock()
        plan = list_pending()
        window.record_listing(listed, found=bool(plan))
        if plan:
            rounds.run(plan)
        else:
            rounds.recorder.flush()


class _Rounds:
    """The rounds of one wave: each plan's batches run, their rows recorded, the latencies kept, and
    the uploads handled (``handled``, which the next listing leaves out)."""

    def __init__(
        self,
        settings: Settings,
        day: date,
        name: str,
        recorder: Recorder,
        run_batches: BatchRunner,
        log: Callable[[str], None],
        handled: dict[str, Recorded],
        *,
        log_rounds: bool,
        progress: Callable[[int, int], None] | None = None,
    ):
        self.settings, self.day, self.name = settings, day, name
        self.recorder, self.run_batches, self.log, self.log_rounds = recorder, run_batches, log, log_rounds
        self.handled = handled
        self.done: list[RoundSummary] = []
        self.latencies: list[float] = []
        self.pixels = 0
        self.reasons: Counter[str] = Counter()
        self.rejects: list[RejectRecord] = []
        self.fallbacks: Counter[str] = Counter()
        self.fell_back = 0
        self.progress = progress
        self.known = self.finished = 0
        """Uploads listed for processing so far, and those handled, over every round."""

    def run(self, plan: WavePlan) -> None:
        started = time.perf_counter()
        processed, rejected = 0, len(plan.bad_keys)
        self.known += len(plan.pending) + len(plan.bad_keys)
        self.recorder.add([], plan.bad_keys, plan.changed)
        self._handled(plan.bad_keys)
        self._arrived(plan.bad_keys)
        self._rejected(plan.bad_keys)
        batches = split_batches(plan.pending, self.settings.workers, self.settings.batch_size)
        label = f"wave {self.name} {self.day} round {len(self.done) + 1}"
        with WaveProgress(len(plan.pending), label, self.log) as progress:
            for result in self.run_batches(batches, self.settings):
                self.recorder.add(result.images, result.rejects, plan.changed)
                self._handled([*result.images, *result.rejects])
                self._arrived([*result.images, *result.rejects])
                processed += len(result.images)
                rejected += len(result.rejects)
                self.pixels += result.pixels
                self._rejected(result.rejects)
                self._fell_back(result.fallbacks)
                progress.advance(len(result.images) + len(result.rejects))
        self.recorder.flush_if_due()  # else its rows wait for more, to share a commit with them
        self.done.append(
            RoundSummary(
                len(self.done) + 1,
                len(plan.pending) + len(plan.bad_keys),
                processed,
                rejected,
                time.perf_counter() - started,
            )
        )
        if self.log_rounds:
            self.log(self.done[-1].line())

    def summary(self, skipped: int, seconds: float) -> WaveSummary:
        """The wave's summary over every round; ``skipped``: the uploads the first listing found handled."""
        return WaveSummary(
            date=self.day.isoformat(),
            wave=self.name,
            listed=sum(r.new for r in self.done) + skipped,
            processed=sum(r.processed for r in self.done),
            rejected=sum(r.rejected for r in self.done),
            skipped=skipped,
            seconds=seconds,
            megapixels=self.pixels / 1e6,
            rounds=self.done,
            latency=Latency.of(self.latencies),
            reasons=dict(self.reasons),
            rejects=self.rejects,
            recorded=self.recorder.recorded,
            commits=self.recorder.commits,
            fallbacks=dict(self.fallbacks),
            fell_back=self.fell_back,
        )

    def _handled(self, records: Sequence[ImageRecord | RejectRecord]) -> None:
        """What the next listing compares with: the versions these rows were made from. (Their rows
        go to this wave's day, or stay where a replaced row was; another writer's row of the same
        upload may be the one kept: the version tells a later wave.)"""
        for record in records:
            before = self.handled.get(record.source_key)
            self.handled[record.source_key] = Recorded.of(record, before.day if before else self.day)

    def _rejected(self, rejects: Sequence[RejectRecord]) -> None:
        self.reasons.update(reject.reason for reject in rejects)
        self.rejects += rejects[: REPORTED_REJECTS - len(self.rejects)]

    def _fell_back(self, fallbacks: Sequence[Fallback]) -> None:
        """Count and log the uploads of a batch that the CPU did in the device codec's place."""
        if not fallbacks:
            return
        labels = Counter(fallback.label() for fallback in fallbacks)
        self.fallbacks.update(labels)
        uploads = len({fallback.source_key for fallback in fallbacks})  # an upload is in one batch only
        self.fell_back += uploads
        self.log(
            f"{uploads} uploads of a batch fell back to the CPU: "
            + "; ".join(f"{count} x {label}" for label, count in labels.most_common())
            + f" (first: {fallbacks[0].source_key})"
        )

    def _arrived(self, records: Sequence[ImageRecord | RejectRecord]) -> None:
        self.finished += len(records)
        if self.progress is not None and records:
            self.progress(self.finished, self.known)
        now = datetime.now(UTC)
        self.latencies += [(now - r.uploaded_at).total_seconds() for r in records if r.uploaded_at is not None]


class Waves:
    """The waves of one deployment, built once from the settings and the backends they open
    (``Graywave.waves``): run one, plan one, process a batch."""

    def __init__(self, settings: Settings, backends: Backends):
        self.settings, self.backends = settings, backends

    def run(
        self,
        day: date,
        name: str,
        *,
        drain: Drain | None = None,
        run_batches: BatchRunner = run_batches_in_threads,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[int, int], None] | None = None,
        flow_run: str | None = None,
    ) -> WaveSummary:
        """Run the wave ``name`` of ``day`` on these backends (``run_wave``)."""
        return run_wave(
            self.settings,
            day,
            name,
            drain=drain,
            run_batches=run_batches,
            log=log,
            clock=clock,
            sleep=sleep,
            progress=progress,
            flow_run=flow_run,
            backends=self.backends,
        )

    def plan(self, day: date) -> WavePlan:
        """What a wave of ``day`` would handle now (``plan_wave``)."""
        return plan_wave(self.backends.blobs, self.backends.lake, day)

    def drain(self, settle_s: float | None = None, max_duration_s: float | None = None) -> Drain:
        """The settle window of the settings, with what the caller overrides (``drain_of``)."""
        return drain_of(self.settings, settle_s, max_duration_s)

    def process_batch(self, uploads: Sequence[Upload]) -> BatchResult:
        """One batch on this machine's device (``process_batch``, which a Dask worker runs from the
        settings alone)."""
        return process_batch(uploads, self.settings)
