"""The wave flow: ``service.wave.run_wave`` with each batch a Prefect task.

    graywave wave run --date 2026-11-25 --name morning

One Prefect task per batch, retried once; the planning, recording and exactly-once rules are the
service's (``graywave.service.wave``). Where the tasks run is the flow's task runner, chosen from
the settings (``wave_flow_for``):

- by default, Prefect's thread pool in this process, ``GRAYWAVE_WORKERS`` batches at once;
- ``GRAYWAVE_DASK_ADDRESS=tcp://host:8786``: the workers of that Dask cluster (prefect-dask);
- ``GRAYWAVE_DASK_WORKERS=N``: a local Dask cluster of N worker processes, made for the wave.

On Dask each worker reads its batch's uploads from the blob store and writes the processed images
itself, and sends back only the rows; this process stays the only writer of the lake and MongoDB.
A batch on a worker that dies is run again by Dask on another one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from itertools import islice
from typing import TYPE_CHECKING, Any, cast

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from graywave.config import Settings, validate_wave_name

if TYPE_CHECKING:
    from prefect_dask.task_runners import DaskTaskRunner
from graywave.errors import BackendUnavailable
from graywave.flows.artifacts import Progress, publish_wave, run_day, tag_this_run
from graywave.flows.failures import failing_with_the_reason
from graywave.service import wave
from graywave.service.batch import BatchResult, Upload

DASK_CONNECT_TIMEOUT_S = 5
"""How long a wave waits for the Dask scheduler before it fails (and records nothing)."""

WORKER_DASK_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""Dask configuration for the local cluster's worker processes. distributed's nannies set
``MALLOC_TRIM_THRESHOLD_`` to hand memory back to the system sooner; set at all, it also freezes
glibc's mmap threshold, so each decoded 12 MP plane is a fresh mmap, page faults included: a batch
took 4-6% longer (``bench/dask_bench.py``). None unsets it. For ``dask worker`` on other machines:
``DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=None``."""


@task(name="process-batch", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=2)
def process_batch(uploads: Sequence[Upload], settings: Settings) -> BatchResult:
    return wave.process_batch(uploads, settings)


def run_batches_as_tasks(batches: list[Sequence[Upload]], settings: Settings) -> Iterator[BatchResult]:
    """A ``BatchRunner``: results as batch tasks finish, with at most ``settings.workers`` in flight.
    Each task run is named ``batch-<i>-of-<n>`` (of its round)."""
    queue = iter(enumerate(batches, start=1))

    def submit(i: int, batch: Sequence[Upload]) -> PrefectFuture[BatchResult]:
        named = process_batch.with_options(task_run_name=f"batch-{i}-of-{len(batches)}")
        return named.submit(batch, settings)

    in_flight = [submit(i, batch) for i, batch in islice(queue, settings.workers)]
    while in_flight:
        finished = next(as_completed(in_flight))
        in_flight.remove(finished)
        following = next(queue, None)
        if following is not None:
            in_flight.append(submit(*following))
        yield finished.result()


def task_runner(settings: Settings) -> DaskTaskRunner | None:
    """The Dask task runner the settings ask for; None for Prefect's default thread pool.
    (prefect-dask and Dask are imported only then: a quarter second of every wave's start-up.)"""
    if not (settings.dask_address or settings.dask_workers):
        return None
    import dask
    from prefect_dask.task_runners import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address, client_kwargs={"timeout": DASK_CONNECT_TIMEOUT_S})
    if settings.dask_workers:
        dask.config.set(WORKER_DASK_CONFIG)  # read when the runner starts the cluster, in this process
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return None


def _on_the_cluster(settings: Settings) -> Settings:
    """``settings`` with ``workers`` set to the Dask cluster's threads, once connected to it (a
    scheduler that cannot be reached fails the wave here, before it holds or records anything)."""
    context = FlowRunContext.get()
    if context is None or not (settings.dask_address or settings.dask_workers):  # Prefect's thread pool
        return settings
    runner = cast("DaskTaskRunner", context.task_runner)
    where = settings.dask_address or "a local cluster"
    try:
        nthreads = cast(Callable[[], dict[str, int]], runner.client.nthreads)  # untyped in distributed
        threads = sum(nthreads().values())
    except (OSError, TimeoutError) as error:
        raise BackendUnavailable(f"the Dask scheduler at {where} cannot be reached: {error}") from error
    if not threads:
        raise BackendUnavailable(f"the Dask cluster at {where} has no workers")
    return settings.model_copy(update={"workers": threads})


def _wave_run_name() -> str:
    parameters = flow_run.parameters
    return f"wave-{parameters.get('name', 'manual')}-{run_day(Settings(), parameters.get('day'))}"


@flow(name="graywave-wave", flow_run_name=_wave_run_name, log_prints=False)
@failing_with_the_reason
def wave_flow(
    day: date | None = None,
    name: str = "manual",
    settle_s: float | None = None,
    max_duration_s: float | None = None,
) -> wave.WaveSummary:
    """Process the pending uploads of ``day`` (default: the day of the run's scheduled start, in
    GRAYWAVE_TIMEZONE) and the day before.

    With ``settle_s`` the wave keeps collecting until nothing new has arrived for that many seconds,
    or ``max_duration_s`` (default ``GRAYWAVE_WAVE_MAX_DURATION_S``) has passed. The run publishes
    its progress, a summary and its rejects as artifacts (``flows.artifacts``).
    """
    settings = _on_the_cluster(Settings())
    day = run_day(settings, day)
    name = validate_wave_name(name)
    tag_this_run(f"day:{day}", f"wave:{name}")
    drain = None if settle_s is None else wave.drain_of(settings, settle_s, max_duration_s)
    progress = Progress(f"Uploads of wave {name} of {day} handled so far")
    summary = wave.run_wave(
        settings,
        day,
        name,
        drain=drain,
        run_batches=run_batches_as_tasks,
        log=get_run_logger().info,
        progress=progress.update,
        flow_run=flow_run.id,
    )
    publish_wave(summary, settings)
    return summary


def wave_flow_for(settings: Settings) -> Flow[..., wave.WaveSummary]:
    """The wave flow with the task runner that ``settings`` ask for."""
    runner = task_runner(settings)
    return wave_flow if runner is None else wave_flow.with_options(task_runner=cast(Any, runner))


@contextmanager
def prefect_api_for_workers(settings: Settings) -> Iterator[None]:
    """Make the Prefect API that this process uses the one its Dask workers report to.

    Without ``PREFECT_API_URL``, Prefect starts a temporary server for the process, and each Dask
    worker would start one of its own (15 s each, and task runs nobody sees). For a wave on Dask
    that temporary server is started here and named in the settings that travel with each task.
    """
    if task_runner(settings) is None or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer  # Prefect's whole server: seconds to import

    server = SubprocessASGIServer()  # the one Prefect would start for this process
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def run_wave_flow(
    settings: Settings,
    day: date | None = None,
    name: str = "manual",
    *,
    settle_s: float | None = None,
    max_duration_s: float | None = None,
) -> wave.WaveSummary:
    """Run the wave flow now, on the task runner that ``settings`` ask for."""
    with prefect_api_for_workers(settings):
        return wave_flow_for(settings)(day=day, name=name, settle_s=settle_s, max_duration_s=max_duration_s)
