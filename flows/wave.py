"""The wave flow: ``service.wave.run_wave`` with each batch a Prefect task.

    graywave wave run --date 2026-11-25 --name morning

One Prefect task per batch, at most ``GRAYWAVE_WORKERS`` running at once, retried once; the
planning, recording and exactly-once rules are the service's (``graywave.service.wave``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from itertools import islice

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

from graywave.config import Settings, validate_wave_name
from graywave.service import wave
from graywave.service.batch import BatchResult, Upload


@task(name="process-batch", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=2)
def process_batch(uploads: Sequence[Upload], settings: Settings) -> BatchResult:
    return wave.process_batch(uploads, settings)


def run_batches_as_tasks(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
    """A ``BatchRunner``: results as batch tasks finish, with at most ``settings.workers`` in flight."""
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


@flow(name="graywave-wave", log_prints=False)
def wave_flow(day: date | None = None, name: str = "manual") -> wave.WaveSummary:
    """Process the pending uploads of ``day`` (default: today in GRAYWAVE_TIMEZONE) and the day before."""
    settings = Settings()
    return wave.run_wave(
        settings,
        day or settings.today(),
        validate_wave_name(name),
        run_batches=run_batches_as_tasks,
        log=get_run_logger().info,
    )
