"""The analytical questions, answered from the lake without Prefect: a day's user histograms,
the median, one user's nearest users, a user's week. ``flows.analytics`` runs them as a flow; the
API and ``graywave query`` call them directly.

Definitions (the README has them too):

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

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from graywave.kernels import select_device
from graywave.kernels.similarity import Metric, all_pairs_nearest, median_histogram, nearest
from graywave.storage.lake import Lake


class NoData(LookupError):
    """The lake has nothing to answer the question with (no images that day, an unknown user)."""


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


def daily_histograms(lake: Lake, day: date) -> DailyHistograms:
    images = pl.from_arrow(lake.read("images", [day], columns=["user_id", "pixel_count", "histogram"]))
    if images.height == 0:
        empty = pl.DataFrame(schema={"user_id": pl.String, "images": pl.Int64, "pixels": pl.Int64,
                                     "counts": pl.List(pl.Int64), "histogram": pl.List(pl.Float64)})
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
        .with_columns(
            pl.col("counts").list.eval(pl.element() / pl.element().sum()).alias("histogram")
        )
        .sort("user_id")
    )
    return DailyHistograms(day, table)


def similar_users_table(daily: DailyHistograms, n: int, metric: Metric, device: str = "cpu") -> pl.DataFrame:
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
        {"rank": np.arange(1, len(indices) + 1, dtype=np.int32), "neighbour_id": [users[j] for j in indices],
         "distance": distances}
    )


def iso_week(text: str | None, today: date) -> tuple[date, date]:
    """Monday and Sunday of ``2026-W48`` (or of the week of ``today``)."""
    if text is None:
        year, week, _ = today.isocalendar()
    else:
        try:
            year_text, week_text = text.upper().split("-W")
            year, week = int(year_text), int(week_text)
            date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO week such as 2026-W48") from None
    monday = date.fromisocalendar(year, week, 1)
    return monday, monday + timedelta(days=6)


def weekly_histograms(lake: Lake, user_id: str, monday: date, sunday: date) -> pl.DataFrame:
    """Every image the user uploaded from ``monday`` to ``sunday``, oldest first, with its histogram."""
    # An upload of day X is processed by a wave of X or X + 1: read one more partition.
    days = [monday + timedelta(days=k) for k in range(8)]
    images = pl.from_arrow(
        lake.read("images", days, columns=["image_id", "user_id", "file_name", "upload_date", "uploaded_at", "histogram"])
    )
    return (
        images.filter(pl.col("user_id") == user_id, pl.col("upload_date").is_between(monday, sunday))
        .drop("user_id")
        .sort("uploaded_at", "image_id")
    )


