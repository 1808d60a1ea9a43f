"""The daily analytics flow: each user's daily histogram, the day's median, every user's nearest users.

    graywave analytics run --date 2026-11-25 --top-n 10 --metric design

What it computes, and the definitions, are in ``graywave.service.daily`` (and in docs/analytics.md).
"""

from __future__ import annotations

from datetime import date

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from graywave.config import Settings
from graywave.errors import InvalidInput, NoData
from graywave.flows.artifacts import publish_analytics, run_day, tag_this_run
from graywave.flows.failures import failing_with_the_reason
from graywave.flows.temporary_server import prefect_api
from graywave.kernels.device import DeviceName
from graywave.kernels.similarity import DEFAULT_METRIC, Metric, check_metric
from graywave.records import MAX_TOP_N
from graywave.service.backends import Backends
from graywave.service.daily import (
    AnalyticsSummary,
    DailyHistograms,
    daily_histograms,
    median_row,
    record_analytics,
    similar_users_table,
)


@task(name="daily-histograms", cache_policy=NO_CACHE, persist_result=False)
def _daily_task(settings: Settings, day: date) -> DailyHistograms:
    with Backends.open(settings) as backends:
        return daily_histograms(backends.lake, day)


@task(name="similar-users", cache_policy=NO_CACHE, persist_result=False)
def _similar_task(daily: DailyHistograms, n: int, metric: Metric, device: DeviceName) -> pl.DataFrame:
    return similar_users_table(daily, n, metric, device)


def _analytics_run_name() -> str:
    return f"analytics-{run_day(Settings(), flow_run.parameters.get('day'))}"


@flow(name="graywave-analytics", flow_run_name=_analytics_run_name)
@failing_with_the_reason
def analytics_flow(day: date | None = None, top_n: int = 10, metric: str = DEFAULT_METRIC) -> AnalyticsSummary:
    """The day's user histograms, median and top-n similar users, into the lake (and MongoDB).

    ``day`` defaults to the day of the run's scheduled start in GRAYWAVE_TIMEZONE. The run publishes
    the median histogram (a table and a bar chart) and a sample of the neighbours as artifacts.
    """
    checked = check_metric(metric)
    if not 1 <= top_n <= MAX_TOP_N:
        raise InvalidInput(f"top_n must be between 1 and {MAX_TOP_N}, not {top_n}")
    settings = Settings()
    day = run_day(settings, day)
    tag_this_run(f"day:{day}")
    daily = _daily_task(settings, day)
    if daily.table.height == 0:
        raise NoData(f"no images were processed on {day}: there is nothing to compute, and nothing was written")
    median = median_row(daily)
    similar = _similar_task(daily, top_n, checked, settings.device)
    with Backends.open(settings) as backends:
        summary = record_analytics(backends, daily, median, similar, checked, flow_run=flow_run.id)
    publish_analytics(day, median, similar)
    get_run_logger().info(summary.line())
    return summary


def run_analytics_flow(day: date | None = None, top_n: int = 10, metric: str = DEFAULT_METRIC) -> AnalyticsSummary:
    """Run the analytics flow now, against ``PREFECT_API_URL`` or else this process's temporary server
    (``flows.temporary_server``), which outlives a SIGTERM or Ctrl-C to the process group: a stopped
    run still ends ``Crashed``, and the command exits in seconds."""
    with prefect_api():
        return analytics_flow(day=day, top_n=top_n, metric=metric)
