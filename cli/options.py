"""The arguments and options several commands take, and how each is read: a value the command
cannot use is a usage error (exit 2) that names it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from graywave.errors import GraywaveError, InvalidInput
from graywave.service.terms import user_id_problem

if TYPE_CHECKING:
    from graywave.kernels.similarity import Metric

MAX_VERSION = 2**63 - 1
"""A Delta table's versions are 64-bit integers."""


def parse_date(text: str) -> date:
    """A ``--date`` value: YYYY-MM-DD in ASCII digits (not ``２026-…``, ``20261125`` or ``2026-W48-3``,
    which ``date.fromisoformat`` reads too); a wrong day is named as such, not as a wrong format; a
    day whose wave would reach past the calendar (``0001-01-01``, ``9999-12-31``) is refused too."""
    from datetime import timedelta

    from graywave.records import WAVE_LOOKBACK_DAYS
    from graywave.service.daily import iso_day

    try:
        day = iso_day(text)
    except InvalidInput as error:
        raise typer.BadParameter(str(error)) from None
    reach = timedelta(days=WAVE_LOOKBACK_DAYS)  # a wave reads the days before and after its own
    if not date.min + reach <= day <= date.max - reach:
        raise typer.BadParameter(
            f"{text} is outside the days graywave handles ({date.min + reach} to {date.max - reach})"
        )
    return day


def check_user(user_id: str) -> str:
    """A USER argument: a user id the API could serve (pattern, reserved names); a usage error (exit
    2) otherwise."""
    problem = user_id_problem(user_id)
    if problem:
        raise typer.BadParameter(problem, param_hint="USER")
    return user_id


def parse_week(text: str) -> str:
    """A ``--week`` value: an ISO week of the calendar (``service.daily.iso_week``'s rules); a usage
    error (exit 2) otherwise."""
    from graywave.service.daily import iso_week

    try:
        iso_week(text, date(2000, 1, 1))
    except GraywaveError as error:
        raise typer.BadParameter(str(error)) from None
    return text


def parse_as_of(text: str) -> int | datetime:
    """An ``--as-of`` value: a table version (``12``) or a time (``2026-11-25T18:00``, UTC unless it
    says otherwise)."""
    if re.fullmatch(r"[0-9]+", text):  # ASCII digits: str.isdigit() is true of "²" and "２" too
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:  # int() of 4,301 digits raises
            raise typer.BadParameter(f"{text} is past the last version a Delta table can have ({MAX_VERSION})")
        return int(text)
    neither = f"{text!r} is neither a table version (a number) nor a time (2026-11-25T18:00)"
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.,+Z-]+)?", text):  # ASCII, one form
        raise typer.BadParameter(neither)
    try:
        when = datetime.fromisoformat(text)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        when.astimezone(UTC)  # 9999-12-31T23:00-01:00 is past the calendar in UTC
    except ValueError:
        raise typer.BadParameter(neither) from None
    except OverflowError:
        raise typer.BadParameter(f"{text} is outside the calendar in UTC") from None
    return when


def check_metric(metric: str) -> Metric:
    """A ``--metric`` value: one of the similarity metrics; a usage error (exit 2) otherwise."""
    from graywave.kernels.similarity import check_metric as checked

    try:
        return checked(metric)
    except GraywaveError as error:
        raise typer.BadParameter(str(error), param_hint="--metric") from None


DayOption = Annotated[
    date | None,
    typer.Option("--date", parser=parse_date, metavar="YYYY-MM-DD", help="Day (default: today in GRAYWAVE_TIMEZONE)."),
]
MetricOption = Annotated[
    str, typer.Option("--metric", help="design, l1, chisquare, intersection, hellinger, correlation.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
AsOfOption = Annotated[
    Any,
    typer.Option(
        "--as-of",
        parser=parse_as_of,
        metavar="VERSION|TIME",
        help="Read the table as it was: a version (graywave lake history) or a time (UTC unless given).",
    ),
]
WeekOption = Annotated[
    str | None, typer.Option("--week", parser=parse_week, help="ISO week, e.g. 2026-W48 (default: this week).")
]
OutputOption = Annotated[Path, typer.Option("-o", "--output", help="The PNG file to write.")]
