from graywave.cli.demo import DEMO_USERS, demo_report, run_demo
from graywave.flows.wave import wave_flow
from tests.helpers import lake_of


def test_the_demo_processes_a_few_days_of_uploads_and_reports_them(settings):
    summaries = run_demo(settings, days=3)
    assert [getattr(s, "wave", "analytics") for s in summaries] == ["morning", "evening", "analytics"] * 3
    lake = lake_of(settings)
    images = lake.read("images")
    assert images.num_rows == 3 * 2 * len(DEMO_USERS)
    assert set(images.column("format").to_pylist()) == {"JPEG", "HEIF", "PNG", "WEBP"}
    assert sorted(lake.read("rejects").column("reason").to_pylist()) == ["empty", "not_an_image", "truncated"]
    report = demo_report(settings)
    assert "30 images processed, 3 uploads rejected." in report
    assert "pl.scan_delta" in report and "graywave lake history" in report
    assert f"Analytics of {settings.today()}" in report
    assert all(f"  {user}: " in report for user in DEMO_USERS)  # each user's nearest users
    assert wave_flow(day=settings.today(), name="evening").processed == 0  # nothing left pending
