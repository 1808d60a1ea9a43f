"""The analytics use case without Prefect (``service.analytics``): what ``flows.analytics`` wraps."""

from datetime import timedelta

import polars as pl
import pytest

from graywave.errors import InvalidInput, NoData
from graywave.service.analytics import AnalyticsRequest, AnalyticsSteps, read_daily_histograms, run_analytics
from graywave.service.daily import Questions, similar_users_table
from tests.helpers import DAY, append_images, image_record, lake_of


def spike(bin_: int, total: int = 100) -> list[int]:
    return [total if k == bin_ else 0 for k in range(16)]


@pytest.fixture
def three_users(settings):
    lake = lake_of(settings)
    append_images(
        lake,
        DAY,
        "morning",
        [image_record(user=user, histogram=spike(b)) for user, b in [("ann", 1), ("ben", 1), ("cat", 9)]],
    )
    return lake


def test_a_run_records_the_day_without_prefect(three_users, settings):
    run = run_analytics(settings, DAY, AnalyticsRequest.of(2, "l1"))
    assert (run.summary.users, run.summary.neighbours, run.summary.metric) == (3, 6, "l1")
    assert run.median["users"] == 3 and len(run.median["histogram"]) == 16
    ann = run.similar.filter(pl.col("user_id") == "ann").sort("rank")
    assert ann.get_column("neighbour_id").to_list() == ["ben", "cat"]
    written = pl.read_delta(three_users.uri("similar_users"))
    assert written.height == 6 and written.get_column("metric").unique().to_list() == ["l1"]
    latest = three_users.history("similar_users", 1)[0]
    assert latest.graywave["operation"] == "analytics" and latest.graywave.get("flow_run") is None


def test_a_run_takes_its_steps_from_the_caller(three_users, settings):
    """The flow passes its Prefect tasks: the use case runs whatever steps it is given, in order."""
    called: list[str] = []

    def daily(settings_, day):
        called.append("daily")
        return read_daily_histograms(settings_, day)

    def similar(daily_, n, metric, device):
        called.append(f"similar {n} {metric} {device}")
        return similar_users_table(daily_, n, metric, device)

    run = run_analytics(
        settings, DAY, AnalyticsRequest.of(1, "design"), steps=AnalyticsSteps(daily, similar), flow_run="run-1"
    )
    assert called == ["daily", f"similar 1 design {settings.device}"]
    assert run.summary.neighbours == 3
    assert three_users.history("daily_median", 1)[0].graywave["flow_run"] == "run-1"


def test_a_day_without_images_writes_nothing(three_users, settings):
    empty = DAY + timedelta(days=3)
    versions = {table: three_users.version(table) for table in ("daily_user_histograms", "similar_users")}
    with pytest.raises(NoData, match="nothing was written"):
        run_analytics(settings, empty, AnalyticsRequest.of(2, "design"))
    assert {table: three_users.version(table) for table in versions} == versions


@pytest.mark.parametrize(
    ("top_n", "metric", "says"), [(0, "design", "between 1 and 100"), (101, "l1", "100"), (5, "cosine", "cosine")]
)
def test_a_bad_request_is_refused_before_anything_is_read(top_n, metric, says):
    with pytest.raises(InvalidInput, match=says):
        AnalyticsRequest.of(top_n, metric)


def test_the_questions_answer_as_the_lake_is_now_or_was(three_users, settings):
    """What the API asks (``service.daily.Questions``): a day kept until ``images`` changes, and a
    read ``as_of`` an earlier version."""
    questions = Questions(three_users)
    before = three_users.version("images")
    assert questions.median(DAY)["users"] == 3
    assert questions.similar("ann", 1, DAY, "l1").get_column("neighbour_id").to_list() == ["ben"]
    week = questions.week("ann", None, DAY)
    assert (week.name, week.monday.isoweekday(), week.images.height) == ("2026-W48", 1, 1)
    append_images(three_users, DAY, "evening", [image_record(user="dan", histogram=spike(9))])
    assert questions.median(DAY)["users"] == 4  # the images table changed: the day is read again
    assert questions.median(DAY, as_of=before)["users"] == 3
    assert questions.similar("cat", 1, DAY, "l1").get_column("neighbour_id").to_list() == ["dan"]
    with pytest.raises(NoData):
        questions.median(DAY + timedelta(days=1))
    with pytest.raises(InvalidInput, match="ISO week"):
        questions.week("ann", "2026-48", DAY)
