"""Hostile values of the CLI's options (issue 21): a clean one-line refusal, never a traceback, and
never a value read some other way (``２``, ``+2026``, ``2_026``: Python's ``int()`` reads them all)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graywave.cli.main import app
from tests.api.test_hostile import read_only, read_only_mounts  # noqa: F401 - a fixture
from tests.helpers import GRAYWAVE

runner = CliRunner()


def refused(args: list[str], exit_code: int, says: str) -> None:
    result = runner.invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception  # no OverflowError, ValueError
    assert result.exit_code == exit_code, result.output
    assert says in " ".join(result.output.replace("│", " ").split()), result.output  # rich wraps its box


@pytest.mark.parametrize(
    ("week", "says"),
    [
        ("9999-W52", "runs past 9999-12-31"),  # was an OverflowError's traceback
        ("２026-W48", "is not an ISO week such as 2026-W48"),
        ("+2026-W48", "is not an ISO week such as 2026-W48"),
        ("2_026-W48", "is not an ISO week such as 2026-W48"),
        ("2025-W53", "2025 has weeks W01 to W52"),
    ],
)
def test_a_week_that_is_not_one_is_refused_in_a_line(settings, week, says):
    refused(["query", "weekly", "ann", "--week", week], 2, says)  # a usage error (README: exit codes)
    refused(["plot", "weekly", "ann", "--week", week, "-o", str(settings.lake_url) + ".png"], 2, says)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("２026-11-25", "is not a date: write YYYY-MM-DD"),
        ("20261125", "is not a date: write YYYY-MM-DD"),  # date.fromisoformat reads it
        ("2026-W48-3", "is not a date: write YYYY-MM-DD"),  # and this
        ("2026-02-30", "2026-02-30 is not a date of the calendar"),
        ("9999-12-31", "is outside the days graywave handles"),  # its wave reads the day after
        ("0001-01-01", "is outside the days graywave handles"),  # and the day before
    ],
)
def test_a_date_is_yyyy_mm_dd_in_ascii_digits_within_the_days_a_wave_can_read(settings, value, says):
    refused(["query", "median", "--date", value], 2, says)  # a usage error (README: exit codes)
    refused(["wave", "run", "--date", value], 2, says)  # refused before any Prefect server is asked


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("²", "is neither a table version"),  # str.isdigit() is true of it: int() then raised
        ("２", "is neither a table version"),  # read as version 2
        ("9" * 30, "is past the last version a Delta table can have"),  # an OverflowError in delta-rs
        ("9" * 5000, "is past the last version a Delta table can have"),  # int() refuses 4,301 digits
        ("2026-11-25\u00a018:00", "is neither a table version"),  # fromisoformat takes any separator
        ("9999-12-31T23:59-01:00", "is outside the calendar in UTC"),
    ],
)
def test_as_of_is_a_version_or_a_time_in_ascii_within_bounds(settings, value, says):
    refused(["query", "median", "--date", "2026-11-25", "--as-of", value], 2, says)


@pytest.mark.parametrize(
    "args",
    [
        ["lake", "history", "-n", "9" * 20],  # an OverflowError in delta-rs
        ["lake", "optimize", "--days", "9" * 20],  # a list of that many days
        ["api", "--port", "70000"],  # an OverflowError in bind()
        ["server", "start", "--port", "70000"],
        ["query", "similar", "ann", "-n", "５"],
    ],
)
def test_counts_and_ports_out_of_bounds_are_usage_errors(settings, args):
    refused(args, 2, "Invalid value")


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("read_only_mounts")
def test_a_wave_on_a_read_only_lake_says_in_a_line_that_it_could_not_run(
    settings, phone_files, tmp_path, prefect_server
):
    """It printed delta-rs's error as a raw traceback. A real read-only mount of the lake, in a mount
    namespace of the command's own: the processing runs, the commit is refused. The wave runs on the
    test process's Prefect server: a temporary one of its own (seconds of CPU) is not this test's subject."""
    from graywave.service.wave import run_wave
    from tests.helpers import DAY, lake_of, put_uploads

    put_uploads(settings.blob_url, DAY, {"ann/first.jpg": phone_files["ann/plain.jpg"]})
    run_wave(settings, DAY, "morning", log=lambda _: None)
    version = lake_of(settings).version("images")
    put_uploads(settings.blob_url, DAY, {"ann/second.jpg": phone_files["ann/plain.jpg"]})
    done = subprocess.run(
        read_only(Path(settings.lake_url), GRAYWAVE, "wave", "run", "--date", DAY.isoformat()),
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "400", "PREFECT_API_URL": prefect_server},
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    last = (done.stdout.strip().splitlines() or [""])[-1]  # the traceback went to stderr
    assert last.startswith("the wave could not run: "), last
    assert "could not be written: a read-only file system" in last, last  # one line, saying why
    assert "Traceback" not in done.stdout  # the CLI's own lines (Prefect logs to stderr)
    assert lake_of(settings).version("images") == version
