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
   round trip gives the cost of a batch; a listing plus a lake append gives the cost of a round;
2. check: real waves with a settle window on the same cluster while a producer thread uploads a
   scaled-down burst at planned times (600 uploads over 60 s, as the issue asks, and 600 over 10 s,
   which is bound by the workers instead of the arrivals); the simulator, given the arrival times
   the producer achieved and the calibrated costs, must predict each drain time within 20%;
3. scale: the drain time and latencies of a 100,000-upload burst for a range of worker counts, and
   the fewest workers that drain it in 5, 15 and 30 minutes.

Photos are the 12 MP JPEGs of ``wave_bench.py`` (1 MB class for the check; the 2 MB class, closer to a
phone's photo, is also calibrated for the scale table).
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import dask
from dask_bench import dask_runner, warm
from distributed import Client, LocalCluster
from wave_bench import samples

from graywave.config import Settings
from graywave.flows.wave import WORKER_DASK_CONFIG
from graywave.records import ImageRecord
from graywave.service.batch import BatchResult, Upload
from graywave.service.wave import TASKS_PER_WORKER, Drain, SettleWindow, plan_wave, process_batch, run_wave
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import Lake
from graywave.storage.layout import upload_key

DAY = date(2026, 11, 25)
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
    """Fixed cost of a round: the listing and the lake append (counted in every round, though a
    draining wave's rounds share lake files: an upper bound)."""
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
    shutil.rmtree(root / "blobs", ignore_errors=True)
    shutil.rmtree(root / "lake", ignore_errors=True)


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
    handled keys) and a lake append of its rows."""
    lake = Lake(LocalBlobStore(root / "lake"))
    started = time.perf_counter()
    plan_wave(LocalBlobStore(root / "blobs"), lake, DAY)
    rows = ImageRecord.from_arrow(lake.read("images"))
    Lake(LocalBlobStore(root / "scratch")).append("images", ImageRecord.to_arrow(rows), day=DAY, wave="bench")
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
    """Writes ``count`` uploads at evenly spread planned times over ``over_s`` seconds."""

    def __init__(self, store: LocalBlobStore, photos: Sequence[bytes], count: int, over_s: float, t0: float):
        super().__init__(name="burst-producer", daemon=True)
        self.store, self.photos, self.count, self.over_s, self.t0 = store, photos, count, over_s, t0
        self.arrivals: list[float] = []

    def run(self) -> None:
        for k in range(self.count):
            delay = self.t0 + k * self.over_s / self.count - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = upload_key(DAY, f"user{k % 100:03d}", f"BURST_{k:04d}.jpg")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gpu-photo-ms", type=float, help="a photo's cost on one GPU, measured there (bench/gpu_bench.py)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args()
    dask.config.set(WORKER_DASK_CONFIG)  # as a wave's local cluster (GRAYWAVE_DASK_WORKERS)
    classes = samples()
    report: dict[str, object] = {}
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
    report["scale"] = {f"cpu {label}": scale_table(c, f"CPU workers, {label} class") for label, c in costs.items()}
    report["scale"]["1,000 users, cpu 2 MB"] = scale_table(  # type: ignore[index]
        costs["2 MB"], "CPU workers, 2 MB class", uploads=1_000, worker_counts=(1, 2, 8)
    )
    if options.gpu_photo_ms:
        gpu = Costs(options.gpu_photo_ms / 1000, costs["2 MB"].batch_s, costs["2 MB"].round_s)
        report["scale"]["gpu"] = scale_table(gpu, "GPU workers (one per GPU)")  # type: ignore[index]
    worst = max(abs(check["error"]) for check in checks.values())
    print(f"\nsimulator against real waves: worst drain error {worst:.1%} (target within 20%)")
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":  # LocalCluster's worker processes import this module again
    main()
