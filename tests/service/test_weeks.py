"""ISO weeks as users write them (``?week=``, ``--week``): ASCII digits in the one form ``2026-W48``,
within the calendar (week 53 only in the years that have one, a whole week of dates Python has)."""

from __future__ import annotations

from datetime import date

import pytest

from graywave.errors import InvalidInput
from graywave.service.daily import iso_week, week_name

TODAY = date(2026, 11, 25)


@pytest.mark.parametrize(
    ("text", "monday"),
    [
        ("2026-W48", date(2026, 11, 23)),
        ("2026-W53", date(2026, 12, 28)),  # 2026 has 53 weeks (it starts on a Thursday)
        ("2027-W01", date(2027, 1, 4)),
        ("0001-W01", date(1, 1, 1)),  # the calendar's first week
        ("9999-W51", date(9999, 12, 20)),  # its last whole week
    ],
)
def test_a_week_is_monday_to_sunday(text, monday):
    first, last = iso_week(text, TODAY)
    assert first == monday and (last - first).days == 6 and first.weekday() == 0
    assert week_name(first) == text


@pytest.mark.parametrize(
    "text",
    [
        "２026-W01",  # fullwidth digits: int() reads them, ISO 8601 does not
        "2026-W٠١",  # Arabic-Indic digits
        "+2026-W01",
        "2_026-W10",
        " 2026-W10",
        "2026-W10\n",
        "2026-w10",
        "2026-W1",
        "2026-W001",
        "20266-W01",
        "-2026-W01",
        "2026W10",
        "2026-48",
        "week",
        "",
    ],
)
def test_anything_but_four_ascii_digits_dash_w_two_digits_is_refused(text):
    with pytest.raises(InvalidInput, match="is not an ISO week such as 2026-W48"):
        iso_week(text, TODAY)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2025-W53", "2025 has weeks W01 to W52"),
        ("2026-W54", "2026 has weeks W01 to W53"),
        ("2026-W00", "2026 has weeks W01 to W53"),
        ("0000-W01", "year 0000 is not in it"),
        ("9999-W52", "past 9999-12-31"),  # its Sunday would be 10000-01-02: an OverflowError, a 500
    ],
)
def test_weeks_outside_the_calendar_are_refused_with_the_reason(text, why):
    with pytest.raises(InvalidInput, match=why):
        iso_week(text, TODAY)


def test_no_week_is_this_week():
    assert iso_week(None, TODAY) == (date(2026, 11, 23), date(2026, 11, 29))
