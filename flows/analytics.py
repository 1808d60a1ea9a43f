"""The daily analytics flow: each user's daily histogram, the day's median, every user's nearest users.

    graywave analytics run --date 2026-11-25 --top-n 10 --metric design
    graywave query weekly alice --week 2026-W48
    graywave query median --date 2026-11-25
    graywave query similar alice -n 5 --date 2026-11-25 --metric l1

The definitions of what it computes are in ``flows.daily`` (and in the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from graywave.backends import Backends
from graywave.config import Settings
from graywave.flows.daily import DailyHistograms, daily_histograms, median_row, similar_users_table
from graywave.kernels.similarity import DEFAULT_METRIC, Metric, check_metric


@task(name="daily-histograms", cache_policy=NO_CACHE, persist_result=False)
def _daily_task(settings: Settings, day: date) -> DailyHistograms:
    with Backends.open(settings) as backends:
        return daily_histograms(backends.lake, day)


@task(name="similar-users", cache_policy=NO_CACHE, persist_result=False)
def _similar_task(daily: DailyHistograms, n: int, metric: Metric, device: str) -> pl.DataFrame:
    return similar_users_table(daily, n, metric, device)


@dataclass(frozen=True)
class AnalyticsSummary:
    date: str
    metric: str
    users: int
    neighbours: int

    def line(self) -> str:
        return (
            f"analytics of {self.date}: {self.users} users, median written, "
            f"{self.neighbours} neighbour rows ({self.metric})"
        )


def _record(backends: Backends, daily: DailyHistograms, median: dict[str, Any] | None, similar: pl.DataFrame, metric: str) -> None:
    day = daily.day
    backends.lake.replace("daily_user_histograms", day, rows=daily.table.to_dicts())
    if median is not None:
        backends.lake.replace("daily_median", day, rows=[median])
    backends.lake.replace("similar_users", day, metric, rows=similar.to_dicts())
    if backends.catalog is None:
        return
    iso = day.isoformat()
    backends.catalog.upsert(
        ({"_id": f"{iso}/{row['user_id']}", "date": iso, **row} for row in daily.table.to_dicts()),
        collection="daily_user_histograms",
    )
    if median is not None:
        backends.catalog.upsert([{"_id": iso, "date": iso, **median}], collection="daily_median")
    neighbours = similar.group_by("user_id", maintain_order=True).agg(
        pl.struct(pl.col("rank"), pl.col("neighbour_id").alias("user_id"), pl.col("distance")).alias("neighbours")
    )
    backends.catalog.upsert(
        (
            {"_id": f"{iso}/{metric}/{row['user_id']}", "date": iso, "metric": metric, **row}
            for row in neighbours.to_dicts()
        ),
        collection="similar_users",
    )


@flow(name="graywave-analytics")
def analytics_flow(day: date | None = None, top_n: int = 10, metric: str = DEFAULT_METRIC) -> AnalyticsSummary:
    """The day's user histograms, median and top-n similar users, into the lake (and MongoDB)."""
    check_metric(metric)
    if top_n < 1:
        raise ValueError("top_n must be at least 1")
    settings = Settings()
    day = day or settings.today()
    logger = get_run_logger()
    daily = _daily_task(settings, day)
    median = median_row(daily) if daily.table.height else None
    similar = _similar_task(daily, top_n, metric, settings.device)
    with Backends.open(settings) as backends:
        _record(backends, daily, median, similar, metric)
    summary = AnalyticsSummary(day.isoformat(), metric, daily.table.height, similar.height)
    logger.info(summary.line())
    return summary
