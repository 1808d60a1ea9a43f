"""The burst simulator (``make bench``; alone: ``.venv/bin/python bench/burst.py``).

A wave with a settle window (``service.wave.run_wave`` with a ``Drain``) drains a burst in rounds:
it lists the store, splits what is pending into batches (``split_batches``), runs them on its
workers, records the rows, and lists again a poll interval after the previous listing started (at
once if the round took longer); while nothing is pending it lists every poll interval.
``simulate`` replays exactly that on a clock, following the wave's own ``SettleWindow``, for arrival
times and a cost per photo, and gives the drain time (first upload to last photo processed) and the
upload-to-processed latencies.

``main`` measures its inputs on this machine, checks it against real waves, then answers the design's
question for 100,000 uploads within 2 minutes:

1. calibration: a one-pass wave of ``CALIBRATION`` uploads on a local Dask cluster of 2 worker
   processes gives the cost of a photo on one worker (the cluster is warmed first); an empty batch's
   round trip gives the cost of a batch; a listing plus a lake record (MERGE) gives the cost of a round;
2. check: real waves with a settle window on the same cluster while a producer thread uploads a
   scaled-down burst at planned times (600 uploads over 60 s, as the issue asks, and 600 over 10 s,
   which is bound by the workers instead of the arrivals); the simulator, given the arrival times
   the producer achieved and the calibrated costs, must predict each drain time within 20%;
3. scale: the drain time and latencies of a 100,000-upload burst for a range of worker counts, and
   the fewest workers that drain it in 5, 15 and 30 minutes.

Photos are the 12 MP JPEGs of ``wave_bench.py`` (1 MB class for the check; the 2 MB class, closer to a
phone's photo, is also calibrated for the scale table).

Then (``--only api-writes`` alone; ``--quick`` for a burst a fifth as long) the drain with the API
writing throughout: 600 uploads arrive over 60 s while a draining wave (``run_wave`` with a
``Drain``, ``GRAYWAVE_WORKERS=2`` threads) takes them in, and a client asks ``graywave api``
(uvicorn, one worker, its own process) for 5 ``?wait=true`` uploads, 5 deletes and 2 replaces a
second, sent at their planned times on up to 24 threads. Each run starts on a fresh deployment with
320 processed images to delete and replace (``--deletes-days-ago``: processed today, or that many
days ago). Reported: the drain time against the same drain with no API writes, and the writes'
refusals (409, 423, 429, 503), other answers and p50/p99, against the same writes with no wave,
and the uploads and replaces alone without the deletes (what the deletes cost them).
Small synthetic photos (``service.samples``: 1600x1200 for the burst, 640x480 for the API) keep it
within two cores.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import dask
import httpx
import numpy as np
from api_bench import deployment_env, running_api
from dask_bench import dask_runner, warm
from distributed import Client, LocalCluster
from wave_bench import samples

from graywave.config import Settings
from graywave.flows.wave import WORKER_DASK_CONFIG
from graywave.records import ImageRecord, handling_days, image_id_for, wave_upload_days
from graywave.service.batch import BatchResult, Upload
from graywave.service.samples import encode, synthetic_photo
from graywave.service.tokens import issue_token
from graywave.service.wave import (
    TASKS_PER_WORKER,
    Drain,
    SettleWindow,
    plan_wave,
    process_batch,
    run_batches_in_threads,
    run_wave,
)
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import CommitInfo, Lake
from graywave.storage.layout import upload_key

DAY = date(2026, 11, 25)
OUT = Path(__file__).with_name("out")
WORKERS = 2
CALIBRATION = 240
CHECKS = {"600 over 60 s": (600, 60.0), "600 over 10 s": (600, 10.0)}
CHECK_DRAIN = Drain(settle_s=5.0, max_duration_s=600.0, poll_s=2.0)
SCALE_DRAIN = Drain(settle_s=600.0, max_duration_s=7 * 3600.0, poll_s=10.0)
"""The scheduled waves' settle window and poll interval, with the maximum duration raised to the 7 h
between the two bursts (GRAYWAVE_WAVE_MAX_DURATION_S), so that a small cluster's drain is seen whole."""
BURST_UPLOADS, BURST_S = 100_000, 120.0
WORKER_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TARGETS_MIN = (5, 15, 30)
S3_LIST_S_PER_PAGE = 0.05
"""Assumed, not measured here: seconds per ListObjectsV2 page of 1,000 keys on S3 (a round of the
scale table lists both upload days; moto on 127.0.0.1 is no stand-in for S3's latency)."""


@dataclass(frozen=True)
class Costs:
    photo_s: float
    """One photo on one worker (decode, histogram, encode, read and write the blobs)."""
    batch_s: float = 0.0
    """Fixed cost of a batch: the task's round trip to its worker."""
    round_s: float = 0.0
    """Fixed cost of a round: the listing and the lake record, a MERGE commit (counted in every round, though a
    draining wave's rounds share commits: an upper bound)."""
    list_s_per_1000: float = 0.0
    """Listing cost per 1,000 keys already in the store (both upload days)."""


@dataclass(frozen=True)
class Outcome:
    drain_s: float
    p50_s: float
    p95_s: float
    max_s: float
    rounds: int
    left: int = 0
    """Uploads that arrived but were left for the next wave (the maximum duration passed)."""


def batch_sizes(pending: int, workers: int, batch_size: int) -> list[int]:
    """The sizes ``service.wave.split_batches`` gives ``pending`` uploads."""
    size = max(1, min(batch_size, math.ceil(pending / (workers * TASKS_PER_WORKER))))
    full, rest = divmod(pending, size)
    return [size] * full + ([rest] if rest else [])


def simulate(
    arrivals: Sequence[float],
    workers: int,
    costs: Costs,
    drain: Drain,
    *,
    batch_size: int = 64,
    start_s: float = 0.0,
) -> Outcome:
    """Replay a draining wave that starts at ``start_s`` on ``arrivals`` (seconds, any order)."""
    arrivals = sorted(arrivals)
    t = last_done = start_s
    window: SettleWindow | None = None
    taken = rounds = 0
    latencies: list[float] = []
    while True:
        seen = bisect.bisect_right(arrivals, t)  # the listing that starts at t
        if window is None:
            window = SettleWindow.open(drain, t, found=seen > taken)
        else:
            window.record_listing(t, found=seen > taken)
        t += costs.round_s + costs.list_s_per_1000 * seen / 1000
        if seen > taken:
            rounds += 1
            free = [t] * workers  # each worker's next free moment
            heapq.heapify(free)
            first = taken
            for size in batch_sizes(seen - taken, workers, batch_size):
                done = heapq.heappop(free) + costs.batch_s + size * costs.photo_s
                heapq.heappush(free, done)
                latencies += [done - a for a in arrivals[first : first + size]]
                first += size
            t = last_done = max(free)
            taken = seen
        if window.closed(t):
            break
        t = max(t, window.next_listing())
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    drain_s = last_done - arrivals[0] if taken == len(arrivals) else math.inf
    return Outcome(drain_s, cuts[49], cuts[94], max(latencies), rounds, left=len(arrivals) - taken)


# --- measurements on this machine ---------------------------------------------------------------


def put(store: LocalBlobStore, photos: Sequence[bytes], count: int, prefix: str) -> None:
    for k in range(count):
        store.write(
            upload_key(DAY, f"user{k % 100:03d}", f"{prefix}{k:04d}.jpg"), photos[k % len(photos)], "image/jpeg"
        )


def settings_for(root: Path) -> Settings:
    return Settings(blob_url=str(root / "blobs"), lake_url=str(root / "lake"), workers=WORKERS, device="cpu")


def fresh(root: Path) -> None:
    for folder in ("blobs", "lake", "scratch"):
        shutil.rmtree(root / folder, ignore_errors=True)


def round_trip(client: Client, settings: Settings) -> float:
    """Seconds for an empty batch to go to a worker and back (best of 5)."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        client.submit(process_batch, [], settings, pure=False).result()
        runs.append(time.perf_counter() - started)
    return min(runs)


def round_cost(root: Path) -> float:
    """Seconds of a round's fixed work on the calibration wave's store: a listing (with the lake's
    handled keys) and the recording of its rows (``Lake.record``: one insert-only MERGE commit, into
    a lake of its own)."""
    lake = Lake(LocalBlobStore(root / "lake"))
    started = time.perf_counter()
    plan_wave(LocalBlobStore(root / "blobs"), lake, DAY)
    rows = ImageRecord.from_arrow(lake.read("images"))
    Lake(LocalBlobStore(root / "scratch")).record(
        "images",
        ImageRecord.to_arrow(rows),
        day=DAY,
        wave="bench",
        among=handling_days(wave_upload_days(DAY)[0], DAY),
        info=CommitInfo("record", DAY, "bench"),
    )
    return time.perf_counter() - started


def calibrate(client: Client, root: Path, photos: Sequence[bytes]) -> Costs:
    fresh(root)
    store = LocalBlobStore(root / "blobs")
    put(store, photos, CALIBRATION, "CAL_")
    settings = settings_for(root)
    batch_s = round_trip(client, settings)
    started = time.perf_counter()
    summary = run_wave(settings, DAY, "calibration", run_batches=dask_runner(client), log=lambda _: None)
    seconds = time.perf_counter() - started
    assert summary.processed == CALIBRATION, summary
    round_s = round_cost(root)
    batches = len(batch_sizes(CALIBRATION, WORKERS, settings.batch_size))
    photo_s = (seconds - round_s - batches / WORKERS * batch_s) * WORKERS / CALIBRATION
    return Costs(photo_s=photo_s, batch_s=batch_s, round_s=round_s)


class Producer(threading.Thread):
    """Writes ``count`` uploads of ``day`` at evenly spread planned times over ``over_s`` seconds."""

    def __init__(
        self, store: LocalBlobStore, photos: Sequence[bytes], count: int, over_s: float, t0: float, day: date = DAY
    ):
        super().__init__(name="burst-producer", daemon=True)
        self.store, self.photos, self.count, self.over_s, self.t0 = store, photos, count, over_s, t0
        self.day = day
        self.arrivals: list[float] = []

    def run(self) -> None:
        for k in range(self.count):
            delay = self.t0 + k * self.over_s / self.count - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = upload_key(self.day, f"user{k % 100:03d}", f"BURST_{k:04d}.jpg")
            self.store.write(key, self.photos[k % len(self.photos)], "image/jpeg")
            self.arrivals.append(time.perf_counter() - self.t0)


def real_burst(
    client: Client, root: Path, photos: Sequence[bytes], count: int, over_s: float
) -> tuple[Outcome, list[float]]:
    """A draining wave on the cluster while the producer uploads; its outcome and the arrival times."""
    fresh(root)
    store = LocalBlobStore(root / "blobs")
    store.root.mkdir(parents=True, exist_ok=True)
    settings = settings_for(root)
    finished: list[float] = []
    run = dask_runner(client)

    def timed(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
        for result in run(batches, settings):
            finished.append(time.perf_counter() - t0)
            yield result

    t0 = time.perf_counter()
    producer = Producer(store, photos, count, over_s, t0)
    producer.start()
    summary = run_wave(settings, DAY, "burst", drain=CHECK_DRAIN, run_batches=timed, log=lambda _: None)
    producer.join()
    assert summary.processed == count, summary
    assert summary.latency is not None
    latency = summary.latency
    return (
        Outcome(max(finished) - producer.arrivals[0], latency.p50, latency.p95, latency.max, len(summary.rounds)),
        producer.arrivals,
    )


def fewest_workers(costs: Costs, arrivals: Sequence[float], target_s: float) -> int:
    """The fewest workers that drain ``arrivals`` within ``target_s`` (a bisection on the simulator)."""
    low, high = 1, 1
    while simulate(arrivals, high, costs, SCALE_DRAIN).drain_s > target_s:
        low, high = high, high * 2
    while low < high:
        middle = (low + high) // 2
        if simulate(arrivals, middle, costs, SCALE_DRAIN).drain_s <= target_s:
            high = middle
        else:
            low = middle + 1
    return high


def scale_table(
    costs: Costs, label: str, uploads: int = BURST_UPLOADS, worker_counts: Sequence[int] = WORKER_COUNTS
) -> dict[str, object]:
    arrivals = [k * BURST_S / uploads for k in range(uploads)]
    at_scale = Costs(costs.photo_s, costs.batch_s, costs.round_s, list_s_per_1000=S3_LIST_S_PER_PAGE)
    rows = {workers: simulate(arrivals, workers, at_scale, SCALE_DRAIN) for workers in worker_counts}
    needed = {minutes: fewest_workers(at_scale, arrivals, minutes * 60) for minutes in TARGETS_MIN}
    print(f"\n{uploads:,} uploads within {BURST_S:.0f} s, {label}: {costs.photo_s * 1000:.1f} ms a photo per worker")
    print("| workers | drain | p50 | p95 | rounds | left for the next wave |")
    print("|---|---|---|---|---|---|")
    for workers, outcome in rows.items():
        print(
            f"| {workers} | {outcome.drain_s / 60:.2f} min | {outcome.p50_s / 60:.2f} min | "
            f"{outcome.p95_s / 60:.2f} min | {outcome.rounds} | {outcome.left} |"
        )
    print("workers needed: " + ", ".join(f"{n} to drain in {m} min" for m, n in needed.items()))
    return {"costs": asdict(at_scale), "rows": {w: asdict(o) for w, o in rows.items()}, "needed": needed}


# --- the drain with the API writing throughout ------------------------------------------

API_BURST = (600, 60.0)
"""The burst that a draining wave takes in while the API writes: 600 uploads over 60 s."""
API_WRITES_PER_S = {"upload": 5.0, "delete": 5.0, "replace": 2.0}
"""What the client asks of the API each second, all through the burst: ``?wait=true`` uploads
(processed in their request), deletes of processed images, and replaces (reprocessed in their request)."""
API_CLIENT_THREADS = 24
"""Requests the client keeps in flight at most; a write whose time has come waits for a free one."""
API_USERS = 50
BURST_PHOTO = (1600, 1200)
API_PHOTO = (640, 480)
"""Small synthetic photos (2 MP for the burst, 0.3 MP for the API's writes), so that two cores can
carry the wave, the API and the client at once."""
REFUSALS = {409, 423, 429, 503}
"""Statuses that refuse a write (the old lake's 409 while a wave held its lock; 503: every
processing slot taken)."""
EXPECTED = {"upload": 200, "delete": 204, "replace": 200}
WITHOUT_DELETES = "uploads and replaces only, no wave"
"""A fourth run: the client's writes but the deletes, alone (what the deletes cost the others)."""


def small_photos(size: tuple[int, int], count: int, seed: int) -> list[bytes]:
    return [encode(synthetic_photo(*size, seed=seed + k), "JPEG", quality=90) for k in range(count)]


@dataclass(frozen=True)
class Write:
    kind: str
    planned: float
    """When it was due, seconds after the start."""
    late: float
    """How long after that it was sent (no client thread was free)."""
    seconds: float
    status: int
    """The answer's status; 0 when no answer came (a transport error)."""


class ApiClient(threading.Thread):
    """Sends ``rates`` writes a second to the API at their planned times for ``duration_s`` seconds,
    on up to ``API_CLIENT_THREADS`` threads: uploads with ``?wait=true``, deletes of ``deletes`` (one
    each), replaces of ``replaces`` (in turn)."""

    def __init__(
        self,
        base: str,
        token: str,
        photos: Sequence[bytes],
        deletes: Sequence[tuple[str, str]],
        replaces: Sequence[tuple[str, str]],
        duration_s: float,
        t0: float,
        rates: dict[str, float],
    ):
        super().__init__(name="api-client", daemon=True)
        self.rates = rates
        self.base, self.headers = base, {"Authorization": f"Bearer {token}"}
        self.photos, self.deletes, self.replaces = photos, deletes, replaces
        self.duration_s, self.t0 = duration_s, t0
        self.writes: list[Write] = []
        self.elapsed_s = math.nan
        """From the start to the last answer."""
        self._lock = threading.Lock()
        self._local = threading.local()

    def plan(self) -> list[tuple[float, str, int]]:
        """(due, kind, number) of every write, interleaved."""
        planned = []
        for offset, (kind, rate) in enumerate(self.rates.items()):
            count = int(rate * self.duration_s)
            planned += [(k / rate + offset * 0.05, kind, k) for k in range(count)]
        assert sum(1 for _, kind, _ in planned if kind == "delete") <= len(self.deletes)
        return sorted(planned)

    def run(self) -> None:
        with ThreadPoolExecutor(API_CLIENT_THREADS, thread_name_prefix="api-client") as pool:
            for due, kind, number in self.plan():
                delay = self.t0 + due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.send, due, kind, number)
        self.elapsed_s = time.perf_counter() - self.t0

    def send(self, due: float, kind: str, number: int) -> None:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = httpx.Client(base_url=self.base, headers=self.headers, timeout=300)
        started = time.perf_counter()
        try:
            if kind == "upload":
                user, photo = f"api{number % API_USERS:03d}", self.photos[number % len(self.photos)]
                files = {"file": (f"API_{number:04d}.jpg", photo, "image/jpeg")}
                answer = http.post(f"/images/{user}", params={"wait": "true"}, files=files)
            elif kind == "delete":
                user, image_id = self.deletes[number]
                answer = http.delete(f"/images/{user}/{image_id}")
            else:
                user, image_id = self.replaces[number % len(self.replaces)]
                photo = self.photos[(number + 1) % len(self.photos)]
                answer = http.put(f"/images/{user}/{image_id}", files={"file": ("new.jpg", photo, "image/jpeg")})
            status = answer.status_code
        except httpx.HTTPError:
            status = 0
        done = time.perf_counter()
        with self._lock:
            self.writes.append(Write(kind, due, started - self.t0 - due, done - started, status))


def seed_images(
    store: LocalBlobStore, settings: Settings, day: date, photos: Sequence[bytes], count: int
) -> list[tuple[str, str]]:
    """``count`` processed images of the API's users (a one-pass wave): what the client deletes and replaces."""
    keys = []
    for k in range(count):
        key = upload_key(day, f"api{k % API_USERS:03d}", f"SEED_{k:04d}.jpg")
        store.write(key, photos[k % len(photos)], "image/jpeg")
        keys.append(key)
    summary = run_wave(settings, day, "seed", log=lambda _: None)
    assert summary.processed == count, summary
    return [(key.split("/")[2], image_id_for(key)) for key in keys]


@dataclass(frozen=True)
class ApiRun:
    name: str
    drain_s: float | None
    latency: tuple[float, float] | None
    """The wave's upload-to-processed p50 and p95, seconds."""
    rounds: int
    processed: int
    commits: int
    """Commits of ``images`` during the run (the wave's flushes, the API's writes)."""
    writes: list[Write]
    writing_s: float
    """From the start to the client's last answer."""


def api_run(
    root: Path,
    name: str,
    *,
    burst: bool,
    writes: bool,
    burst_photos: Sequence[bytes],
    api_photos: Sequence[bytes],
    count: int,
    over_s: float,
    days_ago: int,
    rates: dict[str, float] = API_WRITES_PER_S,
) -> ApiRun:
    """One run on a fresh deployment under ``root / name``: seeded images, ``graywave api`` started, then
    (``burst``) a draining wave of ``API_BURST`` uploads on ``WORKERS`` threads, and (``writes``)
    the client's writes for as long."""
    folder = root / name.replace(" ", "-").replace(",", "")
    env = deployment_env(str(folder), GRAYWAVE_DEVICE="cpu", GRAYWAVE_WORKERS=str(WORKERS))
    settings = Settings(
        blob_url=env["GRAYWAVE_BLOB_URL"], lake_url=env["GRAYWAVE_LAKE_URL"], workers=WORKERS, device="cpu"
    )
    today = settings.today()
    store = LocalBlobStore(settings.blob_url)
    store.root.mkdir(parents=True, exist_ok=True)
    deletes = int(API_WRITES_PER_S["delete"] * over_s)
    seeded = seed_images(store, settings, today - timedelta(days=days_ago), api_photos, deletes + 20)
    token = issue_token(
        Settings(api_tokens_file=Path(env["GRAYWAVE_API_TOKENS_FILE"]), mongodb_uri=None), "bench", admin=True
    )
    lake = Lake(LocalBlobStore(settings.lake_url))
    with running_api(env) as base, httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        warm = http.post(
            "/images/warm", params={"wait": "true"}, files={"file": ("w.jpg", api_photos[0], "image/jpeg")}
        )
        assert warm.status_code == 200, warm.text  # the API's kernels and lake opened before the clock
        assert http.get(f"/images/{seeded[0][0]}/{seeded[0][1]}").status_code == 200
        version = lake.version("images")
        finished: list[float] = []

        def timed(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
            for result in run_batches_in_threads(batches, settings):
                finished.append(time.perf_counter() - t0)
                yield result

        t0 = time.perf_counter()
        client = ApiClient(base, token, api_photos, seeded[:deletes], seeded[deletes:], over_s, t0, rates)
        producer = Producer(store, burst_photos, count, over_s, t0, day=today)
        if writes:
            client.start()
        summary = None
        if burst:
            producer.start()
            summary = run_wave(settings, today, "burst", drain=CHECK_DRAIN, run_batches=timed, log=lambda _: None)
            producer.join()
        if writes:
            client.join()
        commits = lake.version("images") - version
    if summary is None:
        return ApiRun(name, None, None, 0, 0, commits, client.writes, client.elapsed_s)
    assert summary.processed >= count, summary  # the wave may process an upload the API is processing too
    latency = summary.latency
    assert latency is not None
    burst_done = max(finished) - producer.arrivals[0]
    return ApiRun(
        name,
        burst_done,
        (latency.p50, latency.p95),
        len(summary.rounds),
        summary.processed,
        commits,
        client.writes,
        client.elapsed_s,
    )


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(values, [50, 99]) if values else (math.nan, math.nan)
    return float(p50), float(p99)


def api_writes_report(runs: dict[str, ApiRun], count: int, over_s: float, days_ago: int) -> list[str]:
    quiet, busy, alone = runs["no API writes"], runs["API writes throughout"], runs["API writes, no wave"]
    undeleting = runs[WITHOUT_DELETES]
    rates = ", ".join(f"{rate:g} {kind}s" for kind, rate in API_WRITES_PER_S.items())
    lines = [
        "",
        f"Draining wave of {count} uploads over {over_s:.0f} s ({BURST_PHOTO[0]}x{BURST_PHOTO[1]} JPEGs) on {WORKERS} "
        f"threads (`run_wave`, settle {CHECK_DRAIN.settle_s:g} s, poll {CHECK_DRAIN.poll_s:g} s), while a client asks "
        f"`graywave api` (uvicorn, 1 worker, {Settings().api_processing_slots} processing slots) for {rates} a second "
        f"({API_PHOTO[0]}x{API_PHOTO[1]} JPEGs; uploads with `?wait=true`), all on this machine. The deletes and "
        f"replaces are of images that a wave processed "
        + (
            "today, in the partition that the burst's wave and the uploads record into"
            if days_ago == 0
            else f"{days_ago} days ago (an older partition)"
        )
        + ":",
        "",
        "| run | drain (first upload to last row) | wave: upload to processed p50 / p95 | rounds | `images` commits |",
        "|---|---|---|---|---|",
    ]
    for run in (quiet, busy):
        assert run.drain_s is not None and run.latency is not None
        lines.append(
            f"| {run.name} | {run.drain_s:.1f} s | {run.latency[0]:.1f} / {run.latency[1]:.1f} s | {run.rounds} "
            f"| {run.commits} |"
        )
    assert quiet.drain_s and busy.drain_s
    lines += [
        f"| **with / without the API's writes** | **{busy.drain_s / quiet.drain_s:.2f}x** | | | |",
        "",
        "| the API's writes | sent | achieved / s | answered as expected | refused | other answers "
        "| p50 | p99 | sent late (no free client thread) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in (alone, busy, undeleting):
        for kind in [*API_WRITES_PER_S, "all"]:
            writes = [w for w in run.writes if kind in ("all", w.kind)]
            if not writes:
                continue
            good = [w for w in writes if w.status == EXPECTED[w.kind]]
            refused = [w for w in writes if w.status in REFUSALS]
            other = Counter(w.status for w in writes if w.status != EXPECTED[w.kind] and w.status not in REFUSALS)
            p50, p99 = percentiles([w.seconds * 1000 for w in good])
            late = sum(1 for w in writes if w.late > 0.1)
            label = f"{run.name}: {kind}" if kind != "all" else f"**{run.name}: all**"
            lines.append(
                f"| {label} | {len(writes)} | {len(good) / run.writing_s:.1f} | {len(good)} | "
                f"{len(refused)}{' (' + ', '.join(str(w) for w in sorted({w.status for w in refused})) + ')' if refused else ''} "
                f"| {', '.join(f'{n} x {status}' for status, n in sorted(other.items())) or 0} "
                f"| {p50:.0f} ms | {p99:.0f} ms | {late} |"
            )
    good_busy = [w.seconds for w in busy.writes if w.status == EXPECTED[w.kind]]
    good_alone = [w.seconds for w in alone.writes if w.status == EXPECTED[w.kind]]
    refused = sum(1 for w in busy.writes if w.status in REFUSALS)
    lines += [
        "",
        f"Refusals during the drain: **{refused}** (target 0). The writes' p50 during the drain / without a wave: "
        f"**{percentiles(good_busy)[0] / percentiles(good_alone)[0]:.2f}x** (p99: "
        f"{percentiles(good_busy)[1] / percentiles(good_alone)[1]:.2f}x). Achieved: "
        f"{len(good_busy) / busy.writing_s:.1f} writes answered as expected a second during the drain, "
        f"{len(good_alone) / alone.writing_s:.1f} without a wave (asked: {sum(API_WRITES_PER_S.values()):g}). "
        f"The same uploads and replaces without the deletes, no wave: "
        f"{sum(1 for w in undeleting.writes if w.status in REFUSALS)} refused.",
    ]
    return lines


def api_writes(root: Path, count: int, over_s: float, days_ago: int = 0) -> list[str]:
    burst_photos = small_photos(BURST_PHOTO, 4, seed=300)
    api_photos = small_photos(API_PHOTO, 4, seed=400)
    runs = {}
    for name, burst, writes in (
        ("no API writes", True, False),
        ("API writes throughout", True, True),
        ("API writes, no wave", False, True),
        (WITHOUT_DELETES, False, True),
    ):
        print(f"API writes during a drain: {name} ...", flush=True)
        rates = {k: v for k, v in API_WRITES_PER_S.items() if k != "delete" or name != WITHOUT_DELETES}
        runs[name] = api_run(
            root,
            name,
            burst=burst,
            writes=writes,
            burst_photos=burst_photos,
            api_photos=api_photos,
            count=count,
            over_s=over_s,
            days_ago=days_ago,
            rates=rates,
        )
    return api_writes_report(runs, count, over_s, days_ago)


def simulator_checks(options: argparse.Namespace, report: dict[str, object]) -> None:
    """Calibration, the simulator against real waves on Dask, and the scale tables."""
    dask.config.set(WORKER_DASK_CONFIG)  # as a wave's local cluster (GRAYWAVE_DASK_WORKERS)
    classes = samples()
    with (
        tempfile.TemporaryDirectory(prefix="graywave-burst-") as tmp,
        LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        root = Path(tmp)
        client.run(warm)
        costs = {label: calibrate(client, root, classes[label]) for label in ("1 MB", "2 MB")}
        for label, c in costs.items():
            print(
                f"calibration, {label} class on {WORKERS} Dask workers: {c.photo_s * 1000:.1f} ms a photo per worker, "
                f"{c.batch_s * 1000:.1f} ms a batch, {c.round_s * 1000:.1f} ms a round"
            )
        print(
            f"\nscaled-down bursts on {WORKERS} Dask workers (1 MB class, settle {CHECK_DRAIN.settle_s:g} s, poll {CHECK_DRAIN.poll_s:g} s):"
        )
        print(
            "| burst | measured drain | simulated drain | error | measured p50 / p95 | simulated p50 / p95 | rounds (real / sim) |"
        )
        print("|---|---|---|---|---|---|---|")
        checks = {}
        for name, (count, over_s) in CHECKS.items():
            real, arrivals = real_burst(client, root, classes["1 MB"], count, over_s)
            sim = simulate(arrivals, WORKERS, costs["1 MB"], CHECK_DRAIN)
            error = sim.drain_s / real.drain_s - 1
            checks[name] = {"real": asdict(real), "simulated": asdict(sim), "error": error}
            print(
                f"| {name} | {real.drain_s:.1f} s | {sim.drain_s:.1f} s | {error:+.1%} | "
                f"{real.p50_s:.1f} / {real.p95_s:.1f} s | {sim.p50_s:.1f} / {sim.p95_s:.1f} s | {real.rounds} / {sim.rounds} |"
            )
        report["calibration"] = {label: asdict(c) for label, c in costs.items()}
        report["checks"] = checks
    scale: dict[str, object] = {
        f"cpu {label}": scale_table(c, f"CPU workers, {label} class") for label, c in costs.items()
    }
    scale["1,000 users, cpu 2 MB"] = scale_table(
        costs["2 MB"], "CPU workers, 2 MB class", uploads=1_000, worker_counts=(1, 2, 8)
    )
    if options.gpu_photo_ms:
        gpu = Costs(options.gpu_photo_ms / 1000, costs["2 MB"].batch_s, costs["2 MB"].round_s)
        scale["gpu"] = scale_table(gpu, "GPU workers (one per GPU)")
    report["scale"] = scale
    worst = max(abs(check["error"]) for check in checks.values())
    print(f"\nsimulator against real waves: worst drain error {worst:.1%} (target within 20%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gpu-photo-ms", type=float, help="a photo's cost on one GPU, measured there (bench/gpu_bench.py)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--only",
        choices=("simulator", "api-writes"),
        help="run one part: the simulator against real waves, or the drain with the API writing throughout",
    )
    parser.add_argument(
        "--deletes-days-ago",
        type=int,
        default=0,
        help="the API-writes part: delete and replace images processed this many days ago (default 0: today's)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the API-writes part on a burst a fifth as long (checks the script)"
    )
    options = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/burst.py", *sys.argv[1:]])
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `{command}`.", flush=True)
    report: dict[str, object] = {}
    if options.only != "api-writes":
        simulator_checks(options, report)
    if options.only != "simulator":
        with tempfile.TemporaryDirectory(prefix="graywave-burst-api-") as tmp:
            count, over_s = API_BURST
            lines = (
                api_writes(Path(tmp), count // 5, over_s / 5, options.deletes_days_ago)
                if options.quick
                else api_writes(Path(tmp), count, over_s, options.deletes_days_ago)
            )
        report["api_writes"] = lines
        OUT.mkdir(exist_ok=True)
        suffix = f"-{options.deletes_days_ago}-days-ago" if options.deletes_days_ago else ""
        (OUT / f"burst-api-writes{suffix}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":  # LocalCluster's worker processes import this module again
    main()
