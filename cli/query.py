"""``graywave query weekly|median|similar``: the analytical questions answered now, from the lake."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from graywave.cli.common import answer, print_frame
from graywave.cli.options import AsOfOption, DayOption, JsonOption, MetricOption, WeekOption, check_metric, check_user
from graywave.config import Settings

if TYPE_CHECKING:
    from graywave.service.tables import Lake

query_app = typer.Typer(no_args_is_help=True, help="Answer the analytical questions now, from the lake.")


def week_of(user: str, week: str | None, as_of: int | datetime | None = None) -> tuple[date, Any]:
    """Monday of the ISO week and the user's images of it; ``NoData`` when there are none."""
    from graywave.errors import NoData
    from graywave.service.daily import iso_week, weekly_histograms

    check_user(user)

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        monday, sunday = iso_week(week, settings.today())
        images = weekly_histograms(lake, user, monday, sunday, as_of=as_of)
        if images.height == 0:
            raise NoData(f"{user} has no processed images in the week of {monday} to {sunday}")
        return monday, images

    return answer(question)


def median_of(day: date | None, as_of: int | datetime | None = None) -> tuple[date, Any]:
    """The day (today when none) and its median histogram across all users."""
    from graywave.service.daily import daily_histograms, median_row

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        when = day or settings.today()
        return when, median_row(daily_histograms(lake, when, as_of=as_of))

    return answer(question)


@query_app.command("weekly")
def query_weekly(user: str, week: WeekOption = None, as_json: JsonOption = False, as_of: AsOfOption = None) -> None:
    """Every image histogram of a user in an ISO week (Monday to Sunday, GRAYWAVE_TIMEZONE)."""
    monday, frame = week_of(user, week, as_of)
    print_frame(frame, as_json, f"{user}: images of the week of {monday}")


@query_app.command("median")
def query_median(day: DayOption = None, as_json: JsonOption = False, as_of: AsOfOption = None) -> None:
    """The median histogram of a day across all users (normalised, per bin)."""
    import polars as pl

    when, row = median_of(day, as_of)
    print_frame(pl.DataFrame([row]), as_json, f"median histogram of {when}")


@query_app.command("similar")
def query_similar(
    user: str,
    n: Annotated[int, typer.Option("-n", min=1, max=1000, help="How many users.")] = 5,
    day: DayOption = None,
    metric: MetricOption = "design",
    as_json: JsonOption = False,
    as_of: AsOfOption = None,
) -> None:
    """The n users whose histograms of the day are nearest to USER's (one against all)."""
    checked = check_metric(metric)
    check_user(user)
    from graywave.service.daily import daily_histograms, similar_to

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        when = day or settings.today()
        return when, similar_to(daily_histograms(lake, when, as_of=as_of), user, n, checked)

    when, frame = answer(question)
    print_frame(frame, as_json, f"users most similar to {user} on {when} ({metric})")
