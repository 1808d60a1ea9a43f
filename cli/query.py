"""``graywave query weekly|median|similar``: the analytical questions answered now, from the lake."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from graywave.cli.common import answer, print_frame
from graywave.cli.options import AsOfOption, DayOption, JsonOption, MetricOption, WeekOption, check_metric, check_user

if TYPE_CHECKING:
    from graywave.service.graywave import Graywave

query_app = typer.Typer(no_args_is_help=True, help="Answer the analytical questions now, from the lake.")


def week_of(user: str, week: str | None, as_of: int | datetime | None = None) -> tuple[date, Any]:
    """Monday of the ISO week and the user's images of it; ``NoData`` when there are none."""
    from graywave.errors import NoData

    check_user(user)

    def question(graywave: Graywave) -> tuple[date, Any]:
        found = graywave.daily.week(user, week, graywave.settings.today(), as_of=as_of)
        if found.images.height == 0:
            raise NoData(f"{user} has no processed images in the week of {found.monday} to {found.sunday}")
        return found.monday, found.images

    return answer(question)


def median_of(day: date | None, as_of: int | datetime | None = None) -> tuple[date, Any]:
    """The day (today when none) and its median histogram across all users."""

    def question(graywave: Graywave) -> tuple[date, Any]:
        when = day or graywave.settings.today()
        return when, graywave.daily.median(when, as_of=as_of)

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

    def question(graywave: Graywave) -> tuple[date, Any]:
        when = day or graywave.settings.today()
        return when, graywave.daily.similar(user, n, when, checked, as_of=as_of)

    when, frame = answer(question)
    print_frame(frame, as_json, f"users most similar to {user} on {when} ({metric})")
