"""Waves on Dask (``make bench``): 1 against 2 local Dask worker processes, and the Dask hop's cost.

A wave of ``UPLOADS`` 12 MP JPEGs of the 1 MB class (the samples of ``wave_bench.py``) on a local
folder, run by ``service.wave.run_wave`` (no Prefect, so that only the runners differ):

- threads: ``run_batches_in_threads`` with 1 and with 2 workers, in this process;
- dask: the same batches submitted to a ``distributed.LocalCluster`` of 1 and of 2 worker
  processes (one thread each), each batch ``service.wave.process_batch`` on a worker.

Each wave starts from an empty lake (the processed images are rewritten). The cluster is started,
and its workers warmed (imports, compiled kernels), before the clock starts: a wave's own start-up
is measured in ``wave_bench.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path

import dask
from distributed import Client, LocalCluster, as_completed
from wave_bench import samples

from graywave.config import Settings
from graywave.flows.wave import WORKER_DASK_CONFIG
from graywave.service.batch import BatchResult, Upload
from graywave.service.wave import process_batch, run_batches_in_threads, run_wave, split_batches
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key, upload_key

UPLOADS = 600
DAY = date(2026, 11, 25)


def dask_runner(client: Client):
    """A ``BatchRunner`` on a Dask cluster: every batch submitted, results as they finish."""

    def run(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
        futures = [client.submit(process_batch, batch, settings, pure=False) for batch in batches]
        for future in as_completed(futures):
            yield future.result()

    return run


def warm() -> None:
    """Load the compiled kernels on a worker before the clock starts."""
    from graywave.kernels import select_device, warm_up

    warm_up(select_device("cpu"))


def timed_batch(batch: Sequence[Upload], settings: Settings) -> float:
    """Seconds of one ``process_batch``, measured where it runs."""
    started = time.perf_counter()
    process_batch(batch, settings)
    return time.perf_counter() - started


def hop(root: Path) -> tuple[float, float, float]:
    """(batch of 64 in this process, the same batch on a Dask worker, the round trip to it), seconds,
    best of 3 each."""
    store = LocalBlobStore(root / "blobs")
    batch = [Upload(parse_upload_key(blob.key), blob) for blob in list(store.list("uploads/"))[:64]]
    settings = Settings(blob_url=str(root / "blobs"), lake_url=str(root / "lake"), device="cpu")
    here = min(timed_batch(batch, settings) for _ in range(3))
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.submit(timed_batch, batch, settings, pure=False).result()  # warm
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            inner = client.submit(timed_batch, batch, settings, pure=False).result()
            runs.append((inner, time.perf_counter() - started))
    inner, trip = min(runs)
    return here, inner, trip


def wave_seconds(root: Path, workers: int, run_batches) -> float:
    shutil.rmtree(root / "lake", ignore_errors=True)
    settings = Settings(blob_url=str(root / "blobs"), lake_url=str(root / "lake"), workers=workers, device="cpu")
    started = time.perf_counter()
    summary = run_wave(settings, DAY, "bench", run_batches=run_batches, log=lambda _: None)
    assert summary.processed == UPLOADS, summary
    return time.perf_counter() - started


def main() -> None:
    dask.config.set(WORKER_DASK_CONFIG)  # the worker processes of a wave's local cluster (GRAYWAVE_DASK_WORKERS)
    photos = samples()["1 MB"]
    with tempfile.TemporaryDirectory(prefix="graywave-dask-bench-") as tmp:
        root = Path(tmp)
        store = LocalBlobStore(root / "blobs")
        for k in range(UPLOADS):
            store.write(
                upload_key(DAY, f"user{k % 100:03d}", f"IMG_{k:04d}.jpg"), photos[k % len(photos)], "image/jpeg"
            )
        seconds: dict[str, float] = {}
        warm()  # this process's kernels too, for the thread runner
        here, there, trip = hop(root)
        for workers in (1, 2):
            seconds[f"threads {workers}"] = wave_seconds(root, workers, run_batches_in_threads)
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                client.run(warm)
                seconds[f"dask {workers}"] = wave_seconds(root, workers, dask_runner(client))
    sizes = {workers: len(split_batches(list(range(UPLOADS)), workers, 64)[0]) for workers in (1, 2)}
    print(
        f"{UPLOADS} uploads of 12 MP, 1 MB class; batches of {sizes[1]} (1 worker) and {sizes[2]} (2); seconds per wave:"
    )
    print("| runner | 1 worker | 2 workers | 2 / 1 |")
    print("|---|---|---|---|")
    for runner in ("threads", "dask"):
        one, two = seconds[f"{runner} 1"], seconds[f"{runner} 2"]
        print(f"| {runner} | {one:.1f} s | {two:.1f} s | {one / two:.2f}x |")
    for workers in (1, 2):
        extra = seconds[f"dask {workers}"] / seconds[f"threads {workers}"] - 1
        print(f"Dask against threads, {workers} worker(s): {extra:+.1%} of the wave's time")
    print(
        f"One batch of 64: {here:.2f} s in this process, {there:.2f} s on a Dask worker "
        f"({there / here - 1:+.1%}); the round trip adds {(trip - there) * 1000:.0f} ms ({trip / there - 1:+.1%})"
    )


if __name__ == "__main__":  # LocalCluster's worker processes import this module again
    main()
