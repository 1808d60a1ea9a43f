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
