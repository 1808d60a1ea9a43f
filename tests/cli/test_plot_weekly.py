"""``graywave plot weekly`` names its week as the rest of graywave does (``service.daily.week_name``)."""

from __future__ import annotations

from datetime import date

from typer.testing import CliRunner

from graywave.cli.main import app
from graywave.service.daily import iso_week, weekly_histograms
from graywave.service.plots import weekly_png
from tests.helpers import append_images, image_record, lake_of

runner = CliRunner()


def test_the_weekly_chart_of_a_year_before_1000_is_titled_with_the_week_as_it_was_asked(settings, tmp_path):
    """The command built the name itself, without zero-padding the year: the chart of 0999-W10 was
    titled 999-W10, a week that no graywave parser reads."""
    day = date(999, 3, 5)  # a Tuesday of ISO week 0999-W10
    lake = lake_of(settings)
    append_images(lake, day, "morning", [image_record(user="alice", upload_date=day)])
    output = tmp_path / "week.png"
    made = runner.invoke(app, ["plot", "weekly", "alice", "--week", "0999-W10", "-o", str(output)])
    assert made.exit_code == 0, made.output
    monday, sunday = iso_week("0999-W10", day)
    images = weekly_histograms(lake, "alice", monday, sunday)
    assert output.read_bytes() == weekly_png("alice", "0999-W10", images, settings.bins)  # drawn alike, byte for byte
