"""The served deployments end to end, on real processes: a Prefect server (its triggers and actions
services included) and ``graywave serve``, on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled

from graywave.config import Settings
from graywave.service.backends import Backends
from graywave.service.samples import encode, synthetic_photo
from tests.helpers import put_uploads, wait_for

GRAYWAVE = str(Path(sys.executable).with_name("graywave"))


def test_a_late_evening_wave_triggers_the_analytics_of_its_own_day(settings: Settings, prefect_server: str, tmp_path):
    """The analytics used to take the day of their own start: after an evening wave that ran late,
    past midnight, they computed the next day (or found nothing). Here the wave was scheduled three
    days ago and runs now; its analytics must be of that day."""
    zone = ZoneInfo(settings.timezone)
    scheduled = datetime.combine(settings.today() - timedelta(days=3), time(17, 0), zone)
    day = scheduled.date()
    users = ["alice", "bob", "carol"]
    photos = {
        f"{u}/{k}.jpg": encode(synthetic_photo(64, 48, seed=k + 7 * i), "JPEG")
        for i, u in enumerate(users)
        for k in (0, 1)
    }
    put_uploads(settings.blob_url, day, photos)
    env = os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "GRAYWAVE_WAVE_SETTLE_S": "1",  # the served waves' settle window: a second of quiet is enough here
        "GRAYWAVE_WAVE_POLL_S": "0.5",
    }
    serve_log = (tmp_path / "serve.log").open("w+")
    serve = subprocess.Popen([GRAYWAVE, "serve"], env=env, stdout=serve_log, stderr=subprocess.STDOUT)
    try:

        def deployment_id(name: str):
            found = httpx.get(f"{prefect_server}/deployments/name/{name}")
            return found.json()["id"] if found.is_success else None

        evening = wait_for(
            lambda: deployment_id("graywave-wave/wave-evening"), "the evening wave deployment", 120, [serve]
        )
        wait_for(lambda: deployment_id("graywave-analytics/analytics-daily"), "the analytics deployment", 60, [serve])
        # This process's client must talk to that server (it would start a temporary one of its own).
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            wave_run = client.create_flow_run_from_deployment(
                evening, parameters={"name": "evening", "settle_s": 1.0}, state=Scheduled(scheduled_time=scheduled)
            )

            def analytics_done():
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["analytics-daily"])),
                    flow_run_filter=FlowRunFilter(),
                )
                return next((run for run in runs if run.state and run.state.is_final()), None)

            analytics = wait_for(analytics_done, "the evening wave triggers the analytics", 240, [serve])
            wave_state = client.read_flow_run(wave_run.id).state
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    serve_log.seek(0)
    log = serve_log.read()
    assert wave_state is not None and wave_state.is_completed(), log[-3000:]
    assert analytics.state.is_completed(), log[-3000:]
    assert analytics.parameters["day"] == day.isoformat()
    assert analytics.name == f"analytics-{day}"
    with Backends.open(settings) as backends:
        median = backends.lake.read("daily_median", [day]).to_pylist()
    assert [row["users"] for row in median] == [3]
