"""``graywave plot median|weekly``: the analytical answers as PNG charts (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import typer

from graywave.cli.common import CommandFailed, console
from graywave.cli.options import DayOption, OutputOption, WeekOption
from graywave.cli.query import median_of, week_of
from graywave.config import Settings

plot_app = typer.Typer(no_args_is_help=True, help="The analytical answers as PNG charts (matplotlib).")


def _write_png(data: bytes, output: Path) -> None:
    try:
        output.write_bytes(data)
    except OSError as error:
        raise CommandFailed(f"could not write {output}", str(error.strerror)) from None
    console.print(f"wrote {output} ({len(data):,} bytes)", highlight=False)


@plot_app.command("median")
def plot_median(output: OutputOption = Path("median.png"), day: DayOption = None) -> None:
    """The day's median histogram, a bar per bin labelled with its grey levels."""
    from graywave.service.plots import median_png

    when, median = median_of(day)
    _write_png(median_png(when, median), output)


@plot_app.command("weekly")
def plot_weekly(user: str, output: OutputOption = Path("week.png"), week: WeekOption = None) -> None:
    """A user's image histograms of an ISO week, a line per image."""
    from graywave.service.daily import week_name
    from graywave.service.plots import weekly_png

    monday, images = week_of(user, week)
    _write_png(weekly_png(user, week_name(monday), images, Settings().bins), output)
