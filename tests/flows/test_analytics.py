import json
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from graywave.cli.main import app
from graywave.errors import InvalidInput
from graywave.flows.analytics import analytics_flow
from graywave.kernels.similarity import nearest
from graywave.service.daily import (
    NoData,
    daily_histograms,
    iso_week,
    median_row,
    similar_to,
    weekly_histograms,
)
from tests.helpers import DAY, append_images, image_record, lake_of


def spike(bin_: int, total: int = 100, rest: int = 0) -> list[int]:
    return [total if k == bin_ else rest for k in range(16)]


@pytest.fixture
def day_in_lake(settings):
    """Five users on DAY: two waves for alice, users with empty bins, and one day before with one user."""
    lake = lake_of(settings)
    append_images(
        lake,
        DAY,
        "morning",
        [
            image_record(user="alice", histogram=spike(2, 300, 1), name="m.jpg"),
            image_record(user="bob", histogram=spike(2, 50, 2)),
            image_record(user="carol", histogram=spike(9, 400)),
            image_record(user="dave", histogram=spike(9, 400)),  # identical to carol: a tie
        ],
    )
    append_images(
        lake,
        DAY,
        "evening",
        [
            image_record(user="alice", histogram=spike(3, 100, 1), name="e.jpg"),
            image_record(user="erin", histogram=spike(15, 40, 3)),
        ],
    )
    append_images(lake, DAY - timedelta(days=1), "evening", [image_record(user="zoe", histogram=spike(0))])
    return lake


def test_daily_histograms_sum_every_image_of_the_day_per_user(day_in_lake):
    daily = daily_histograms(day_in_lake, DAY)
    assert daily.users == ["alice", "bob", "carol", "dave", "erin"]
    alice = daily.table.row(0, named=True)
    assert alice["images"] == 2
    expected = np.array(spike(2, 300, 1)) + np.array(spike(3, 100, 1))
    assert alice["counts"] == expected.tolist()
    assert alice["pixels"] == expected.sum()
    np.testing.assert_allclose(alice["histogram"], expected / expected.sum())
    np.testing.assert_allclose(daily.fractions().sum(axis=1), 1.0)


def test_median_over_all_bins_of_an_odd_and_an_even_day(day_in_lake):
    daily = daily_histograms(day_in_lake, DAY)
    row = median_row(daily)
    assert row["users"] == 5 and len(row["histogram"]) == 16
    np.testing.assert_allclose(row["histogram"], np.median(daily.fractions(), axis=0))
    np.testing.assert_allclose(row["histogram"][15], sorted(daily.fractions()[:, 15])[2])  # the 16th bin too
    one = median_row(daily_histograms(day_in_lake, DAY - timedelta(days=1)))
    assert one == {"users": 1, "histogram": [1.0] + [0.0] * 15}
    with pytest.raises(NoData):
        median_row(daily_histograms(day_in_lake, DAY + timedelta(days=3)))


def test_similar_users_one_against_all(day_in_lake):
    daily = daily_histograms(day_in_lake, DAY)
    frame = similar_to(daily, "carol", 2, "design")
    assert frame.get_column("neighbour_id").to_list()[0] == "dave"  # identical histogram, distance 0
    assert frame.get_column("distance").to_list()[0] == 0.0
    assert "carol" not in frame.get_column("neighbour_id").to_list()
    dave = similar_to(daily, "dave", 4, "l1")
    assert dave.get_column("neighbour_id").to_list()[0] == "carol"
    expected, _ = nearest(daily.fractions(), 0, 4, "l1")
    assert similar_to(daily, "alice", 4, "l1").get_column("neighbour_id").to_list() == [
        daily.users[j] for j in expected
    ]
    with pytest.raises(NoData, match="no images"):
        similar_to(daily, "zoe", 2, "l1")


def test_weekly_histograms_follow_iso_weeks(settings):
    lake = lake_of(settings)
    monday, sunday = date(2026, 11, 23), date(2026, 11, 29)
    append_images(
        lake,
        monday,
        "morning",
        [
            image_record(user="alice", histogram=spike(1), upload_date=monday, name="mon.jpg"),
            image_record(user="alice", histogram=spike(1), upload_date=monday - timedelta(days=1), name="prev-sun.jpg"),
        ],
    )
    append_images(
        lake,
        sunday + timedelta(days=1),
        "morning",
        [
            image_record(user="alice", histogram=spike(2), upload_date=sunday, name="sun.jpg"),
            image_record(user="alice", histogram=spike(3), upload_date=sunday + timedelta(days=1), name="next-mon.jpg"),
        ],
    )
    append_images(lake, DAY, "evening", [image_record(user="bob", histogram=spike(4), upload_date=DAY, name="bob.jpg")])
    frame = weekly_histograms(lake, "alice", *iso_week("2026-W48", DAY))
    assert frame.get_column("file_name").to_list() == ["mon.jpg", "sun.jpg"]
    assert frame.get_column("histogram").to_list()[1] == spike(2)
    assert iso_week(None, DAY) == (monday, sunday)
    assert iso_week("2027-W01", DAY) == (date(2027, 1, 4), date(2027, 1, 10))
    for bad in ("2026-48", "2026-W54", "week"):
        with pytest.raises(ValueError, match="ISO week"):
            iso_week(bad, DAY)


def test_the_analytics_flow_writes_the_lake_and_a_rerun_replaces_it(day_in_lake, settings):
    summary = analytics_flow(day=DAY, top_n=3, metric="l1")
    assert (summary.users, summary.neighbours) == (5, 15)
    version = day_in_lake.version("daily_user_histograms")
    analytics_flow(day=DAY, top_n=3, metric="l1")  # replaced, not appended: one overwrite commit
    assert day_in_lake.version("daily_user_histograms") == version + 1
    latest = day_in_lake.history("daily_user_histograms", 1)[0]
    assert latest.operation == "WRITE" and latest.graywave["operation"] == "analytics"
    assert latest.graywave["day"] == DAY.isoformat() and latest.graywave.get("flow_run")
    daily = pl.read_delta(day_in_lake.uri("daily_user_histograms"))
    assert daily.height == 5 and daily.get_column("date").unique().to_list() == [DAY]
    median = pl.read_delta(day_in_lake.uri("daily_median"))
    assert median.height == 1 and len(median.get_column("histogram")[0]) == 16
    similar = pl.read_delta(day_in_lake.uri("similar_users"))
    assert similar.height == 15
    assert similar.get_column("metric").unique().to_list() == ["l1"]
    carol = similar.filter(pl.col("user_id") == "carol").sort("rank")
    assert carol.get_column("neighbour_id").to_list()[0] == "dave"
    assert (similar.get_column("user_id") != similar.get_column("neighbour_id")).all()


def test_analytics_of_days_with_one_user_and_with_none(day_in_lake, settings):
    one = analytics_flow(day=DAY - timedelta(days=1), top_n=3, metric="design")
    assert (one.users, one.neighbours) == (1, 0)
    with pytest.raises(NoData, match="nothing was written"):  # it used to say "median written" over empty files
        analytics_flow(day=DAY + timedelta(days=5), top_n=3, metric="design")
    assert not len(lake_of(settings).read("daily_median", [DAY + timedelta(days=5)]))


@pytest.mark.parametrize("top_n", [0, 101])
def test_a_top_n_out_of_bounds_is_refused_before_anything_is_read(day_in_lake, settings, top_n):
    """A deployment run could ask for more neighbours than the GPU kernel's table holds (the CLI
    caps --top-n at 100): it used to fail after the day was read, and only on a GPU."""
    with pytest.raises(InvalidInput, match="between 1 and 100"):
        analytics_flow(day=DAY, top_n=top_n, metric="design")


def test_analytics_go_to_mongodb_when_configured(s3_settings):
    import pymongo

    lake = lake_of(s3_settings)
    append_images(
        lake, DAY, "morning", [image_record(user=u, histogram=spike(b)) for u, b in [("a", 1), ("b", 1), ("c", 5)]]
    )
    analytics_flow(day=DAY, top_n=2, metric="design")
    database = pymongo.MongoClient(s3_settings.mongodb_uri.get_secret_value())[s3_settings.mongodb_database]
    assert database["daily_user_histograms"].count_documents({"date": DAY.isoformat()}) == 3
    assert database["daily_median"].find_one({"_id": DAY.isoformat()})["users"] == 3
    a = database["similar_users"].find_one({"_id": f"{DAY.isoformat()}/design/a"})
    assert [n["user_id"] for n in a["neighbours"]] == ["b", "c"]
    assert a["neighbours"][0]["distance"] == 0.0


def test_query_commands(day_in_lake, settings):
    runner = CliRunner()
    result = runner.invoke(
        app, ["query", "similar", "carol", "-n", "2", "--date", str(DAY), "--metric", "l1", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["neighbour_id"] == "dave"
    result = runner.invoke(app, ["query", "median", "--date", str(DAY), "--json"])
    assert json.loads(result.output)[0]["users"] == 5
    result = runner.invoke(app, ["query", "weekly", "alice", "--week", "2026-W48"])
    assert result.exit_code == 0 and "m.jpg" in result.output and "e.jpg" in result.output
    assert runner.invoke(app, ["query", "similar", "nobody", "--date", str(DAY)]).exit_code == 1
    assert runner.invoke(app, ["query", "similar", "carol", "--metric", "cosine"]).exit_code == 2
    assert runner.invoke(app, ["query", "weekly", "alice", "--week", "48"]).exit_code == 2  # a usage error


def test_an_analytics_run_is_named_for_its_day_and_publishes_the_median_and_neighbours(day_in_lake, settings):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    analytics_flow(day=DAY, top_n=2, metric="design")
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"analytics-{DAY}"])),
            sort=FlowRunSort.START_TIME_DESC,  # the latest: earlier tests ran others of that name
            limit=1,
        )
        assert f"day:{DAY}" in run.tags
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    artifacts = {artifact.key: artifact.data for artifact in found}
    median = artifacts["analytics-median"]
    assert "| 0-15 |" in median and "| 240-255 |" in median and "█" in median
    neighbours = json.loads(artifacts["analytics-neighbours"])
    assert {row["user_id"] for row in neighbours} == {"alice", "bob", "carol", "dave", "erin"}
    assert sorted(row["rank"] for row in neighbours) == [1] * 5 + [2] * 5
