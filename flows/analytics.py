"""The daily analytics flow: each user's daily histogram, the day's median, every user's nearest users.

    graywave analytics run --date 2026-11-25 --top-n 10 --metric design

What it does is ``graywave.service.analytics``'s use case; the definitions are in ``graywave.service.daily``
(and in docs/analytics.md). This module only runs it in Prefect: its tasks, run name, tags and artifacts.
"""

from __future__ import annotations

from datetime import date

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from graywave.config import Settings
from graywave.flows.artifacts import publish_analytics, run_day, tag_this_run
from graywave.flows.failures import failing_with_the_reason
from graywave.flows.temporary_server import prefect_api
from graywave.kernels.device import DeviceName
from graywave.kernels.similarity import DEFAULT_METRIC, Metric
from graywave.service import Graywave
from graywave.service.analytics import AnalyticsRequest, AnalyticsSteps, read_daily_histograms
from graywave.service.daily import AnalyticsSummary, DailyHistograms, similar_users_table


@task(name="daily-histograms", cache_policy=NO_CACHE, persist_result=False)
def _daily_task(settings: Settings, day: date) -> DailyHistograms:
    return read_daily_histograms(settings, day)


@task(name="similar-users", cache_policy=NO_CACHE, persist_result=False)
def _similar_task(daily: DailyHistograms, n: int, metric: Metric, device: DeviceName) -> pl.DataFrame:
    return similar_users_table(daily, n, metric, device)


TASKS = AnalyticsSteps(daily=_daily_task, similar=_similar_task)
"""The use case's heavy steps as Prefect tasks, each shown in the run's UI."""


def _analytics_run_name() -> str:
    return f"analytics-{run_day(Settings(), flow_run.parameters.get('day'))}"


@flow(name="graywave-analytics", flow_run_name=_analytics_run_name)
@failing_with_the_reason
def analytics_flow(day: date | None = None, top_n: int = 10, metric: str = DEFAULT_METRIC) -> AnalyticsSummary:
    """The day's user histograms, median and top-n similar users, into the lake (and MongoDB):
    ``service.analytics.Daily.run`` (``run_analytics``) as a flow.

    ``day`` defaults to the day of the run's scheduled start in GRAYWAVE_TIMEZONE. The run publishes
    the median histogram (a table and a bar chart) and a sample of the neighbours as artifacts.
    """
    request = AnalyticsRequest.of(top_n, metric)
    settings = Settings()
    day = run_day(settings, day)
    tag_this_run(f"day:{day}")
    with Graywave(settings) as graywave:
        run = graywave.daily.run(day, request, steps=TASKS, flow_run=flow_run.id)
    publish_analytics(day, run.median, run.similar)
    get_run_logger().info(run.summary.line())
    return run.summary


def run_analytics_flow(day: date | None = None, top_n: int = 10, metric: str = DEFAULT_METRIC) -> AnalyticsSummary:
    """Run the analytics flow now, against ``PREFECT_API_URL`` or else this process's temporary server
    (``flows.temporary_server``), which outlives a SIGTERM or Ctrl-C to the process group: a stopped
    run still ends ``Crashed``, and the command exits in seconds."""
    with prefect_api():
        return analytics_flow(day=day, top_n=top_n, metric=metric)
