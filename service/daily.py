"""The analytical questions, answered from the lake without Prefect: a day's user histograms,
the median, one user's nearest users, a user's week; and the recording of the daily results.
``service.analytics`` runs them in order (``flows.analytics`` as a flow); the API and ``graywave
query`` ask them through ``Graywave.daily`` (``service.analytics.Daily``, a ``Questions``).

Definitions (docs/analytics.md has them too):

- A user's **daily histogram** of day D is the sum of the counts of all their images processed by
  the waves of D (the lake's ``date`` partition), and its normalised form divides it by the pixel
  total (fractions summing to 1), so that photo size does not matter.
- A user's **weekly histograms** are the histograms of every image they uploaded in an ISO week
  (Monday to Sunday, by the upload's date in GRAYWAVE_TIMEZONE).
- The **daily median** is the per-bin median of the users' normalised daily histograms of D, over
  all bins; an even number of users takes the mean of the two middle values. It is not renormalised.
- **Similar users** are the n users whose normalised daily histograms are nearest by a metric of
  ``graywave.kernels.similarity`` (smaller = closer); a user is never their own neighbour and ties
  break by user id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, date, timedelta
from threading import Lock
from typing import Any

import numpy as np
import polars as pl

from graywave.errors import InvalidInput, NoData
from graywave.kernels import select_device
from graywave.kernels.device import DeviceName
from graywave.kernels.similarity import Metric, all_pairs_nearest, median_histogram, nearest
from graywave.records import WAVE_LOOKBACK_DAYS, handling_days
from graywave.service.backends import Backends
from graywave.storage.lake import AsOf, CommitInfo, Lake, VersionCache


@dataclass(frozen=True)
class DailyHistograms:
    """Every user's daily histogram of one day, sorted by user id (so that indices order like ids)."""

    day: date
    table: pl.DataFrame
    """user_id, images, pixels, counts (list of int64), histogram (list of float64 fractions)."""

    @property
    def users(self) -> list[str]:
        return self.table.get_column("user_id").to_list()

    def fractions(self) -> np.ndarray:
        bins = len(self.table.get_column("histogram")[0]) if self.table.height else 0
        return self.table.get_column("histogram").list.to_array(bins).to_numpy() if bins else np.zeros((0, 0))


def daily_histograms(lake: Lake, day: date, *, as_of: AsOf = None) -> DailyHistograms:
    """Every user's daily histogram of ``day``, from ``images`` as it is now or ``as_of`` a version or time."""
    images = pl.DataFrame(lake.scan("images", days=[day], columns=["user_id", "pixel_count", "histogram"], as_of=as_of))
    if images.height == 0:
        empty = pl.DataFrame(
            schema={
                "user_id": pl.String,
                "images": pl.Int64,
                "pixels": pl.Int64,
                "counts": pl.List(pl.Int64),
                "histogram": pl.List(pl.Float64),
            }
        )
        return DailyHistograms(day, empty)
    lengths = images.get_column("histogram").list.len().unique()
    if lengths.len() != 1:
        raise ValueError(f"images of {day} have histograms of different lengths: {lengths.to_list()}")
    bins = lengths[0]
    table = (
        images.group_by("user_id")
        .agg(
            pl.len().cast(pl.Int64).alias("images"),
            pl.col("pixel_count").sum().alias("pixels"),
            *(pl.col("histogram").list.get(k).sum().alias(f"bin{k}") for k in range(bins)),
        )
        .select(
            "user_id",
            "images",
            "pixels",
            pl.concat_list([f"bin{k}" for k in range(bins)]).alias("counts"),
        )
        .with_columns(pl.col("counts").list.eval(pl.element() / pl.element().sum()).alias("histogram"))
        .sort("user_id")
    )
    return DailyHistograms(day, table)


def similar_users_table(daily: DailyHistograms, n: int, metric: Metric, device: DeviceName = "cpu") -> pl.DataFrame:
    """Every user's n nearest users: user_id, rank (1 = nearest), neighbour_id, distance."""
    users = daily.users
    schema = {"user_id": pl.String, "rank": pl.Int32, "neighbour_id": pl.String, "distance": pl.Float64}
    if len(users) < 2:
        return pl.DataFrame(schema=schema)
    fractions = select_device(device).put(daily.fractions())
    indices, distances = all_pairs_nearest(fractions, n, metric)
    rows, ranks = np.nonzero(indices >= 0)
    names = np.asarray(users, dtype=object)
    return pl.DataFrame(
        {
            "user_id": names[rows],
            "rank": (ranks + 1).astype(np.int32),
            "neighbour_id": names[indices[rows, ranks]],
            "distance": distances[rows, ranks],
        },
        schema=schema,
    )


def median_row(daily: DailyHistograms) -> dict[str, Any]:
    if daily.table.height == 0:
        raise NoData(f"no images were processed on {daily.day}")
    return {"users": daily.table.height, "histogram": median_histogram(daily.fractions()).tolist()}


def similar_to(daily: DailyHistograms, user_id: str, n: int, metric: Metric) -> pl.DataFrame:
    """One user's n nearest users, computed one against all (no all-pairs job needed)."""
    users = daily.users
    try:
        i = users.index(user_id)
    except ValueError:
        raise NoData(f"user {user_id!r} has no images processed on {daily.day}") from None
    indices, distances = nearest(daily.fractions(), i, n, metric)
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(indices) + 1, dtype=np.int32),
            "neighbour_id": [users[j] for j in indices],
            "distance": distances,
        }
    )


ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""A day as users write it: ``2026-11-25``, ASCII digits only."""


def iso_day(text: str) -> date:
    """The day ``2026-11-25``. ``InvalidInput`` for any other form that ``date.fromisoformat`` or
    pydantic would read too (``２026-11-25``, ``20261125``, ``2026-W48-3``,
    ``2026-11-25T00:00:00``), and for a day the calendar does not have (``2026-02-30``)."""
    if not ISO_DAY.fullmatch(text):
        raise InvalidInput(f"{text!r} is not a date: write YYYY-MM-DD, e.g. 2026-11-25")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text} is not a date of the calendar") from None


ISO_WEEK = re.compile(r"([0-9]{4})-W([0-9]{2})")
"""An ISO week as users write it: four ASCII digits, ``-W``, two ASCII digits (``[0-9]``, not
``\\d``, which matches every script's digits)."""


def iso_week(text: str | None, today: date) -> tuple[date, date]:
    """Monday and Sunday of ``2026-W48`` (or of the week of ``today``). ``InvalidInput`` for any
    other form (``２026-W48``, ``+2026-W48``, ``2_026-W48``, ``2026-w48``: ``int()`` reads them, ISO
    8601 does not) and for a week the calendar does not have: week 53 of a year of 52, year 0000,
    and 9999-W52, whose Sunday would be in the year 10000 (the weekly query reads the wave days
    after it too)."""
    if text is None:
        year, week, _ = today.isocalendar()
        monday = date.fromisocalendar(year, week, 1)
    else:
        found = ISO_WEEK.fullmatch(text)
        if found is None:
            raise InvalidInput(f"{text!r} is not an ISO week such as 2026-W48 (YYYY-Www)")
        year, week = int(found[1]), int(found[2])
        if not MINYEAR <= year <= MAXYEAR:
            raise InvalidInput(
                f"{text} is not an ISO week of the calendar: year {found[1]} is not in it ({MINYEAR:04d} to {MAXYEAR})"
            )
        weeks = date(year, 12, 28).isocalendar().week  # the 28th of December is always in the year's last week
        if not 1 <= week <= weeks:
            raise InvalidInput(f"{text} is not an ISO week of the calendar: {year:04d} has weeks W01 to W{weeks}")
        monday = date.fromisocalendar(year, week, 1)
    if date.max - monday < timedelta(days=6 + WAVE_LOOKBACK_DAYS):
        raise InvalidInput(f"the ISO week {week_name(monday)} runs past {date.max}, the calendar's last day")
    return monday, monday + timedelta(days=6)


def week_name(monday: date) -> str:
    """The ISO week of a day, as ``iso_week`` reads it: ``2026-W48``."""
    year, week, _ = monday.isocalendar()
    return f"{year:04d}-W{week:02d}"


def weekly_histograms(lake: Lake, user_id: str, monday: date, sunday: date, *, as_of: AsOf = None) -> pl.DataFrame:
    """Every image the user uploaded from ``monday`` to ``sunday``, oldest first, with its histogram."""
    images = pl.DataFrame(
        lake.scan(
            "images",
            days=handling_days(monday, sunday),
            columns=["image_id", "file_name", "upload_date", "uploaded_at", "histogram"],
            equal={"user_id": user_id},
            filter=pl.col("upload_date").is_between(monday, sunday),
            as_of=as_of,
        )
    )
    return images.sort("uploaded_at", "image_id")


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


def record_analytics(
    backends: Backends,
    daily: DailyHistograms,
    median: dict[str, Any] | None,
    similar: pl.DataFrame,
    metric: str,
    *,
    flow_run: str | None = None,
) -> AnalyticsSummary:
    """Replace the day's results in the lake (one overwrite commit per table whose predicate names
    the day and the metric, while waves and the API write), then in the catalog (MongoDB's
    documents, when configured)."""
    day = daily.day
    info = CommitInfo("analytics", day, flow_run=flow_run)
    backends.lake.replace("daily_user_histograms", daily.table.to_arrow(), day=day, info=info)
    if median is not None:
        backends.lake.replace("daily_median", pl.DataFrame([median]).to_arrow(), day=day, info=info)
    backends.lake.replace("similar_users", similar.to_arrow(), day=day, metric=metric, info=info)
    backends.catalog.record_analytics(day, daily.table, median, similar, metric)
    return AnalyticsSummary(day.isoformat(), metric, daily.table.height, similar.height)


class DailyHistogramsCache:
    """``daily_histograms`` of recent days, computed again only when the ``images`` table's version
    changes (any commit: a wave's, a reprocessing, a deletion, a compaction)."""

    def __init__(self, lake: Lake, days_kept: int = 8):
        self.lake = lake
        self._cached: VersionCache[DailyHistograms] = VersionCache(days_kept)
        self._lock = Lock()  # one computation at a time: the API's routes run on a thread pool

    def get(self, day: date) -> DailyHistograms:
        with self._lock:
            version = self.lake.version("images")
            daily = self._cached.get(day, version)
            if daily is None:
                daily = daily_histograms(self.lake, day)
                self._cached.put(day, version, daily)
            return daily


@dataclass(frozen=True)
class Week:
    """A user's images of one ISO week: its name (``2026-W48``), Monday, Sunday, and the images."""

    name: str
    monday: date
    sunday: date
    images: pl.DataFrame


class Questions:
    """The analytical questions asked of one lake, as the API asks them: a user's week, a day's median,
    a user's nearest users. A day read as it is now is kept (``DailyHistogramsCache``) until the
    ``images`` table changes; one read ``as_of`` a version or a time is read each time."""

    def __init__(self, lake: Lake, days_kept: int = 8):
        self.lake = lake
        self.days = DailyHistogramsCache(lake, days_kept)

    def daily(self, day: date, *, as_of: AsOf = None) -> DailyHistograms:
        return self.days.get(day) if as_of is None else daily_histograms(self.lake, day, as_of=as_of)

    def week(self, user_id: str, week: str | None, today: date, *, as_of: AsOf = None) -> Week:
        """The user's images of ``week`` (``2026-W48``; the week of ``today`` when None)."""
        monday, sunday = iso_week(week, today)
        images = weekly_histograms(self.lake, user_id, monday, sunday, as_of=as_of)
        return Week(week_name(monday), monday, sunday, images)

    def median(self, day: date, *, as_of: AsOf = None) -> dict[str, Any]:
        """The day's median histogram across all users (``median_row``); ``NoData`` for a day without images."""
        return median_row(self.daily(day, as_of=as_of))

    def similar(self, user_id: str, n: int, day: date, metric: Metric, *, as_of: AsOf = None) -> pl.DataFrame:
        """The user's ``n`` nearest users of ``day`` (``similar_to``)."""
        return similar_to(self.daily(day, as_of=as_of), user_id, n, metric)
