from pathlib import Path

from prefect.client.orchestration import get_client

from graywave.config import Settings
from graywave.flows.schedule import deployments, wave_deployments


def test_deployments_follow_the_two_bursts_in_the_service_time_zone_with_a_settle_window(monkeypatch):
    monkeypatch.setenv("GRAYWAVE_TIMEZONE", "Europe/Rome")
    monkeypatch.setenv("GRAYWAVE_WAVE_MAX_DURATION_S", "5400")
    deployments = wave_deployments(Settings())
    crons = {d.name: (d.schedules[0].schedule.cron, d.schedules[0].schedule.timezone) for d in deployments}
    assert crons == {"wave-morning": ("0 10 * * *", "Europe/Rome"), "wave-evening": ("0 17 * * *", "Europe/Rome")}
    assert {d.name: d.parameters for d in deployments} == {
        "wave-morning": {"name": "morning", "settle_s": 600.0, "max_duration_s": 5400.0},
        "wave-evening": {"name": "evening", "settle_s": 600.0, "max_duration_s": 5400.0},
    }
    assert all(d.concurrency_limit == 1 for d in deployments)


def test_deployments_register_with_the_prefect_api(monkeypatch):
    monkeypatch.setenv("GRAYWAVE_TIMEZONE", "America/New_York")
    ids = [deployment.apply() for deployment in wave_deployments(Settings())]
    with get_client(sync_client=True) as client:
        stored = [client.read_deployment(i) for i in ids]
    assert sorted(d.name for d in stored) == ["wave-evening", "wave-morning"]
    for deployment in stored:
        assert deployment.schedules[0].schedule.timezone == "America/New_York"
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1


def test_the_analytics_run_after_each_completed_evening_wave():
    names = [d.name for d in deployments(Settings())]
    assert names == ["wave-morning", "wave-evening", "analytics-daily", "lake-maintenance", "reprocess"]
    analytics = deployments(Settings())[2]
    trigger = analytics.triggers[0]
    assert trigger.expect == {"prefect.flow-run.Completed"}
    assert trigger.match_related.root == {
        "prefect.resource.role": "deployment",
        "prefect.resource.name": "wave-evening",
    }
    assert analytics.concurrency_limit == 1


def test_the_reprocessing_job_is_served_without_a_schedule_one_run_at_a_time():
    reprocess = deployments(Settings())[-1]
    assert (reprocess.flow_name, reprocess.name) == tuple(["graywave-reprocess", "reprocess"])
    assert not reprocess.schedules and not reprocess.triggers and reprocess.concurrency_limit == 1


def test_the_lake_maintenance_runs_nightly_one_run_at_a_time(monkeypatch):
    monkeypatch.setenv("GRAYWAVE_TIMEZONE", "Europe/Rome")
    [maintenance] = [d for d in deployments(Settings()) if d.name == "lake-maintenance"]
    assert maintenance.flow_name == "graywave-lake-maintenance"
    assert (maintenance.schedules[0].schedule.cron, maintenance.schedules[0].schedule.timezone) == (
        "30 3 * * *",
        "Europe/Rome",
    )
    assert maintenance.concurrency_limit == 1


def test_the_runbooks_alerting_automation_is_a_valid_prefect_automation():
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    path = Path(__file__).parents[2] / "docs/operations/graywave-failed-runs.yaml"
    [automation] = [AutomationCore.model_validate(a) for a in yaml.safe_load(path.read_text())["automations"]]
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert automation.actions[0].type == "send-notification"
