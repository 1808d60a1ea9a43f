from typer.testing import CliRunner

from graywave.flows.cli import app

from .helpers import DAY, lake_of, put_uploads

runner = CliRunner()


def test_wave_run_prints_a_summary_and_exits_zero_with_rejects(settings, phone_files):
    put_uploads(settings.blob_url, DAY, phone_files)
    result = runner.invoke(app, ["wave", "run", "--date", DAY.isoformat(), "--name", "evening"])
    assert result.exit_code == 0, result.output
    assert "7 processed, 4 rejected, 0 skipped" in result.output
    assert "images/s" in result.output
    assert len(lake_of(settings).read("images", [DAY])) == 7


def test_bad_arguments_exit_with_usage_errors(settings):
    assert runner.invoke(app, ["wave", "run", "--name", "1000"]).exit_code == 2
    assert runner.invoke(app, ["wave", "run", "--date", "25/11/2026"]).exit_code == 2


def test_a_wave_that_cannot_run_exits_non_zero_with_the_reason(settings):
    with lake_of(settings).exclusive():
        result = runner.invoke(app, ["wave", "run", "--date", DAY.isoformat()])
    assert result.exit_code == 1
    assert "another wave is writing to the lake" in result.output


def test_settings_shows_the_configuration(settings):
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0
    assert f"GRAYWAVE_BLOB_URL={settings.blob_url}" in result.output
    assert "GRAYWAVE_BINS=16" in result.output
