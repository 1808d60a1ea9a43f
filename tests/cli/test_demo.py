"""``graywave demo`` as a new user runs it: a process of its own, with no Prefect server to use."""

import subprocess
from datetime import timedelta

import pytest

from graywave.cli.demo import DEMO_USERS
from graywave.flows.wave import wave_flow
from tests.helpers import GRAYWAVE, command_env, flow_run_states, lake_of


@pytest.mark.timeout(600)  # three days of waves and a temporary server: minutes beside a CPU hog
def test_the_demo_processes_a_few_days_of_uploads_on_graywaves_temporary_server_and_reports_them(
    settings, prefect_home
):
    """Its flows run on graywave's temporary server (Prefect's own refused, as in
    ``test_signalled_commands``), each day's two waves then its analytics, in that order."""
    env = command_env(prefect_home, PREFECT_SERVER_EPHEMERAL_ENABLED="false", COLUMNS="400")  # lines unwrapped
    done = subprocess.run([GRAYWAVE, "demo", "--days", "3"], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    today = settings.today()
    days = [today - timedelta(days=2), today - timedelta(days=1), today]
    expected = [(f"{run}-{day}", "COMPLETED") for day in days for run in ("wave-morning", "wave-evening", "analytics")]
    assert flow_run_states(prefect_home) == expected

    lake = lake_of(settings)
    images = lake.read("images")
    assert images.num_rows == 3 * 2 * len(DEMO_USERS)
    assert set(images.column("format").to_pylist()) == {"JPEG", "HEIF", "PNG", "WEBP"}
    assert sorted(lake.read("rejects").column("reason").to_pylist()) == ["empty", "not_an_image", "truncated"]
    report = done.stdout
    assert "30 images processed, 3 uploads rejected." in report
    assert "pl.scan_delta" in report and "graywave lake history" in report
    assert f"Analytics of {today}" in report
    assert all(f"  {user}: " in report for user in DEMO_USERS)  # each user's nearest users
    assert "The runs went to a temporary Prefect server" in report
    assert wave_flow(day=today, name="evening").processed == 0  # nothing left pending


def test_the_demos_polars_hint_reads_the_lake_on_s3_too(s3_settings):
    """The prober found it: on an S3 lake the demo's Polars line had no endpoint and failed."""
    import polars as pl

    from graywave.cli.demo import polars_hint
    from tests.helpers import append_images, image_record

    lake = lake_of(s3_settings)
    append_images(lake, s3_settings.today(), "morning", [image_record("uploads/x/alice/a.jpg", "alice")])
    hint = polars_hint(s3_settings, lake.uri("images"))
    assert s3_settings.s3_endpoint_url in hint
    frame = eval(hint, {"pl": pl})  # the line the demo prints, run as an analyst would
    assert frame["user_id"].to_list() == ["alice"]
