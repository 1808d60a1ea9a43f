"""The daily analytics use case, without Prefect: check the request, read the day's user histograms,
refuse a day without images, compute the median and every user's nearest users, and record them.

``flows.analytics`` runs it as a flow (its two heavy steps as Prefect tasks, through
``AnalyticsSteps``) and publishes what it returns as the run's artifacts. The definitions are in
``service.daily`` (and docs/analytics.md). ``Daily`` (``Graywave.daily``) holds the questions and
this run for one deployment's backends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from graywave.config import Settings
from graywave.errors import InvalidInput, NoData
from graywave.kernels.device import DeviceName
from graywave.kernels.similarity import Metric, check_metric
from graywave.records import MAX_TOP_N
from graywave.service.backends import Backends
from graywave.service.daily import (
    AnalyticsSummary,
    DailyHistograms,
    Questions,
    daily_histograms,
    median_row,
    record_analytics,
    similar_users_table,
    weekly_histograms,
)
from graywave.storage.lake import AsOf


@dataclass(frozen=True)
class AnalyticsRequest:
    """What a run computes: each user's ``top_n`` nearest users by ``metric``."""

    top_n: int
    metric: Metric

    @classmethod
    def of(cls, top_n: int, metric: str) -> AnalyticsRequest:
        """The request checked before anything is read: ``InvalidInput`` for a metric that
        ``kernels.similarity`` does not have, or a ``top_n`` outside 1 to ``MAX_TOP_N`` (the GPU
        kernel's table holds no more)."""
        checked = check_metric(metric)
        if not 1 <= top_n <= MAX_TOP_N:
            raise InvalidInput(f"top_n must be between 1 and {MAX_TOP_N}, not {top_n}")
        return cls(top_n, checked)


def read_daily_histograms(settings: Settings, day: date) -> DailyHistograms:
    """Every user's daily histogram of ``day``, from the lake as it is now."""
    with Backends.open(settings) as backends:
        return daily_histograms(backends.lake, day)


@dataclass(frozen=True)
class AnalyticsSteps:
    """How ``run_analytics`` runs its two heavy steps: called here by default (``DIRECT``); the
    flow passes its Prefect tasks, so that the UI shows each step."""

    daily: Callable[[Settings, date], DailyHistograms] = read_daily_histograms
    similar: Callable[[DailyHistograms, int, Metric, DeviceName], pl.DataFrame] = similar_users_table


DIRECT = AnalyticsSteps()


@dataclass(frozen=True)
class AnalyticsRun:
    """What a run recorded: its summary, and the median and neighbours that it wrote."""

    summary: AnalyticsSummary
    median: dict[str, Any]
    similar: pl.DataFrame


def run_analytics(
    settings: Settings,
    day: date,
    request: AnalyticsRequest,
    *,
    steps: AnalyticsSteps = DIRECT,
    flow_run: str | None = None,
    backends: Backends | None = None,
) -> AnalyticsRun:
    """The day's user histograms, median and ``request.top_n`` similar users, into the lake (and
    the catalog), replacing the day's earlier results. ``NoData`` when no image was processed on
    ``day``: nothing is computed and nothing is written. ``flow_run``: the run that the lake's
    commits name. ``backends``: those of the caller's ``Graywave`` (``Daily.run``), left open; else
    the results are recorded on backends opened for it."""
    daily = steps.daily(settings, day)
    if daily.table.height == 0:
        raise NoData(f"no images were processed on {day}: there is nothing to compute, and nothing was written")
    median = median_row(daily)
    similar = steps.similar(daily, request.top_n, request.metric, settings.device)
    with Backends.open(settings) if backends is None else contextlib.nullcontext(backends) as recording:
        summary = record_analytics(recording, daily, median, similar, request.metric, flow_run=flow_run)
    return AnalyticsRun(summary, median, similar)


class Daily(Questions):
    """The analytical questions of one deployment (``Questions``: a user's week, a day's median, a
    user's nearest users), the daily analytics run and recorded, built once from the settings and
    the backends they open (``Graywave.daily``)."""

    def __init__(self, settings: Settings, backends: Backends, days_kept: int = 8):
        super().__init__(backends.lake, days_kept)
        self.settings, self.backends = settings, backends

    def histograms(self, day: date, *, as_of: AsOf = None) -> DailyHistograms:
        """Every user's daily histogram of ``day``, read now (``daily_histograms``; never the cached one)."""
        return daily_histograms(self.lake, day, as_of=as_of)

    def weekly(self, user_id: str, monday: date, sunday: date, *, as_of: AsOf = None) -> pl.DataFrame:
        """Every image the user uploaded from ``monday`` to ``sunday`` (``weekly_histograms``)."""
        return weekly_histograms(self.lake, user_id, monday, sunday, as_of=as_of)

    def record(
        self,
        daily: DailyHistograms,
        median: dict[str, Any] | None,
        similar: pl.DataFrame,
        metric: str,
        *,
        flow_run: str | None = None,
    ) -> AnalyticsSummary:
        """Replace the day's results in the lake and the catalog (``record_analytics``)."""
        return record_analytics(self.backends, daily, median, similar, metric, flow_run=flow_run)

    def run(
        self,
        day: date,
        request: AnalyticsRequest,
        *,
        steps: AnalyticsSteps | None = None,
        flow_run: str | None = None,
    ) -> AnalyticsRun:
        """The daily analytics of ``day`` (``run_analytics``), recorded on these backends; its steps
        are ``steps`` (the flow's tasks), else read and computed here, on these backends too."""
        if steps is None:
            steps = AnalyticsSteps(daily=lambda _, day: self.histograms(day))
        return run_analytics(self.settings, day, request, steps=steps, flow_run=flow_run, backends=self.backends)
