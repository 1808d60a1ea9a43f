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

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from graywave.config import Settings, validate_wave_name

if TYPE_CHECKING:
    from prefect_dask.task_runners import DaskTaskRunner
from graywave.errors import BackendUnavailable
from graywave.flows import serving
from graywave.flows.artifacts import Progress, publish_wave, run_day, tag_this_run
from graywave.flows.automations import RUN_TAG, heartbeat_s
from graywave.flows.failures import failing_with_the_reason
from graywave.flows.temporary_server import prefect_api
from graywave.service import Graywave, wave
from graywave.service.batch import BatchResult, Upload
from graywave.service.scheduling import bounded

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
    """A ``BatchRunner``: results as batch tasks finish, with at most ``settings.workers`` in flight
    (``scheduling.bounded``: each batch is a task run once it is submitted, and a failed batch leaves
    none queued behind it). Each task run is named ``batch-<i>-of-<n>`` (of its round)."""

    def submit(numbered: tuple[int, Sequence[Upload]]) -> PrefectFuture[BatchResult]:
        i, batch = numbered
        named = process_batch.with_options(task_run_name=f"batch-{i}-of-{len(batches)}")
        return named.submit(batch, settings)

    for finished in bounded(submit, enumerate(batches, start=1), settings.workers, as_completed):
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
        from graywave.flows.dask_workers import WORKERS_STOPPED

        dask.config.set(WORKER_DASK_CONFIG)  # read when the runner starts the cluster, in this process
        # Quiet by default: distributed logs every start, connection and close at INFO (about 45
        # lines a wave), and its scheduler serves HTTP (the dashboard's port, 8787) even without
        # the dashboard, warning when another wave holds that port: a free port unless asked for.
        for name in ("distributed", "prefect.task_runner.dask"):  # the latter names a dashboard that is off
            logging.getLogger(name).setLevel(logging.WARNING)
        # At the wave's end the local cluster stops its workers; on a loaded machine one may take
        # over 4 s, and the nanny warns that it kills it: that is the end the wave asked for.
        logging.getLogger("distributed.nanny").addFilter(WORKERS_STOPPED)  # once, however many waves
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": settings.dask_dashboard or "127.0.0.1:0",
                "scheduler_kwargs": {"dashboard": settings.dask_dashboard is not None},
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
    if not settings.dask_address:  # the wave's own local cluster
        from graywave.flows.dask_workers import QuietAtTheEnd

        runner.client.register_plugin(QuietAtTheEnd())
    return settings.model_copy(update={"workers": threads})


class ServeStop:
    """How a wave under ``graywave serve`` notices that serve is stopping (``flows.serving``): the
    wave's clock and sleep, given to ``service.wave.run_wave``. Once serve stops, the clock jumps
    past the settle window's end, so the window closes after the round in flight has been
    processed and recorded (the service's own rule: it stops listing once past ``max_duration_s``),
    and a wait for the next listing ends at once."""

    def __init__(self, max_duration_s: float):
        self.step = max_duration_s + 1.0
        self.jump = 0.0
        self.stopped_at: float | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def clock(self) -> float:
        if self.stopped_at is None and serving.stop_requested():
            self.stopped_at = time.monotonic()
        if self.stopped_at is not None:
            self.jump += self.step  # every reading after the stop is past the window of any before it
        return time.monotonic() + self.jump

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not serving.stop_requested():
            time.sleep(min(left, serving.CHECK_S))


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

    Under ``graywave serve``, a stop of serve ends the settle window after the round in flight (see
    ``ServeStop``); a run of a deployment then schedules a follow-up run for the rest of the window.
    """
    started = time.monotonic()
    settings = _on_the_cluster(Settings())
    day = run_day(settings, day)
    name = validate_wave_name(name)
    tag_this_run(f"day:{day}", f"wave:{name}", RUN_TAG)
    logger = get_run_logger()
    drain = _drain(settings, settle_s, max_duration_s, f"wave {name} of {day}", logger.info)
    stop = ServeStop(drain.max_duration_s if drain is not None else 0.0)
    collecting = f"wave {name} of {day}: stopped collecting after "

    def log(line: str) -> None:
        if stop.stopped and line.startswith(collecting):  # the service read the stop's clock
            line = f"{collecting}{time.monotonic() - started:.0f} s: graywave serve is stopping"
        logger.info(line)

    progress = Progress(f"Uploads of wave {name} of {day} handled so far")
    with Graywave(settings) as graywave:
        summary = graywave.waves.run(
            day,
            name,
            drain=drain,
            run_batches=run_batches_as_tasks,
            log=log,
            clock=stop.clock,
            sleep=stop.sleep,
            progress=progress.update,
            flow_run=flow_run.id,
        )
    publish_wave(summary, settings)
    if stop.stopped and drain is not None:
        _follow_up(day, name, drain, time.monotonic() - started, logger.info)
    return summary


def _drain(
    settings: Settings, settle_s: float | None, max_duration_s: float | None, label: str, log: Callable[[str], None]
) -> wave.Drain | None:
    """The wave's settle window: none without ``settle_s``, or while ``graywave serve`` is stopping
    (one round then)."""
    if settle_s is None:
        return None
    drain = wave.drain_of(settings, settle_s, max_duration_s)
    if serving.stop_requested():
        log(f"{label}: graywave serve is stopping: one round, no settle window")
        return None
    return drain


def _follow_up(day: date, name: str, drain: wave.Drain, elapsed_s: float, log: Callable[[str], None]) -> None:
    """Schedule, now, a run of this run's deployment for the rest of its settle window: the next
    ``graywave serve`` runs it (the deployment runs one wave at a time and queues the rest)."""
    deployment_id = deployment.id
    left_s = drain.max_duration_s - elapsed_s
    if deployment_id is None or left_s <= 0:
        return
    parameters = {"day": day.isoformat(), "name": name, "settle_s": drain.settle_s, "max_duration_s": left_s}
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(UUID(deployment_id), parameters=parameters, tags=[RUN_TAG])
    log(
        f"wave {name} of {day}: graywave serve is stopping: scheduled run {run.name} ({run.id}) to collect"
        f" for up to {left_s:.0f} s more once serve runs again"
    )


def wave_flow_for(settings: Settings) -> Flow[..., wave.WaveSummary]:
    """The wave flow with the task runner that ``settings`` ask for."""
    runner = task_runner(settings)
    return wave_flow if runner is None else wave_flow.with_options(task_runner=cast(Any, runner))


def run_wave_flow(
    settings: Settings,
    day: date | None = None,
    name: str = "manual",
    *,
    settle_s: float | None = None,
    max_duration_s: float | None = None,
) -> wave.WaveSummary:
    """Run the wave flow now, on the task runner that ``settings`` ask for, against
    ``PREFECT_API_URL`` or else a temporary server of this process that outlives a SIGTERM or Ctrl-C
    to the process group (``flows.temporary_server``): a stopped wave still ends its run ``Crashed``,
    and exits in seconds. (On Dask, the workers report to that same server: each would otherwise
    start a temporary server of its own, 15 s each, and task runs nobody sees.) The run beats at
    graywave's heartbeat (``flows.automations``), so the server's zombie detection judges it too."""
    with prefect_api(), temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat_s()}):
        return wave_flow_for(settings)(day=day, name=name, settle_s=settle_s, max_duration_s=max_duration_s)
