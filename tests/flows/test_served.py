"""The served deployments end to end, on real processes: a Prefect server (its triggers and actions
services included) and ``graywave serve``, on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import time as clock
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled

from graywave.config import Settings
from graywave.service.backends import Backends
from graywave.service.samples import encode, synthetic_photo
from tests.helpers import DAY, GRAYWAVE, SERVER_TIMEOUT_S, lake_of, put_uploads, wait_for


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
            found = httpx.get(f"{prefect_server}/deployments/name/{name}", timeout=SERVER_TIMEOUT_S)
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

            def wave_ended():
                run = client.read_flow_run(wave_run.id)
                return run if run.state and run.state.is_final() else None

            wave = wait_for(wave_ended, "the evening wave's run ends", 240, [serve])
            wave_state = wave.state
            serve_output = (tmp_path / "serve.log").read_text
            assert wave_state.is_completed(), serve_output()[-3000:]  # only a Completed wave triggers them

            def analytics_done():
                """A final run of the analytics created after this wave ended: the server's earlier
                tests' evening waves trigger analytics of their own, this test's run is not the only one."""
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["analytics-daily"])),
                    flow_run_filter=FlowRunFilter(),
                )
                ours = [run for run in runs if wave.end_time is not None and run.created >= wave.end_time]
                first = min(ours, key=lambda run: run.created, default=None)
                return first if first is not None and first.state and first.state.is_final() else None

            analytics = wait_for(analytics_done, "the evening wave triggers the analytics", 240, [serve])
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


def start_serve(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("a") as log:
        return subprocess.Popen([GRAYWAVE, "serve", "--stop-timeout", "120"], env=env, stdout=log, stderr=log)


def stop_serve(serve: subprocess.Popen) -> float:
    """SIGTERM, as systemd or docker stop; the seconds until serve has exited."""
    began = clock.monotonic()
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=180)  # a TimeoutExpired here is a failure: serve did not stop
    return clock.monotonic() - began


def recorded(settings: Settings) -> list[str]:
    lake = lake_of(settings)
    return sorted(lake.read("images").column("source_key").to_pylist()) if lake.files("images") else []


def test_a_stopped_serve_lets_its_wave_finish_the_round_and_a_restart_resumes_the_settle_window(
    settings: Settings, prefect_server: str, tmp_path
):
    """SIGTERM to graywave serve used to cancel the wave in flight (CANCELLED, the burst left for the
    next wave, hours later). Now serve takes no new run, the wave records the round it is processing
    and ends COMPLETED, with a follow-up run scheduled for the rest of its settle window, which the
    next serve runs: here it is stopped once while the wave processes, once while it collects."""
    first = {f"u{i:02d}/IMG_{i}.jpg": encode(synthetic_photo(1600, 1200, seed=i), "JPEG") for i in range(16)}
    keys = put_uploads(settings.blob_url, DAY, first)
    env = os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "GRAYWAVE_WAVE_POLL_S": "0.5",
        "GRAYWAVE_WORKERS": "1",
        "GRAYWAVE_BATCH_SIZE": "1",
        "GRAYWAVE_LAKE_FLUSH_ROWS": "1",  # a lake commit per upload: the round's progress can be seen
    }
    log_path = tmp_path / "serve.log"
    serve = start_serve(env, log_path)
    created: list = []
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        try:

            def registered():
                try:
                    found = client.read_deployment_by_name("graywave-wave/wave-morning")
                except ObjectNotFound:
                    return None
                return found.id if not found.paused else None  # paused: by another test's serve, until this one starts

            morning = wait_for(registered, "the morning wave deployment", 120, [serve])
            parameters = {"day": DAY.isoformat(), "name": "morning", "settle_s": 600.0, "max_duration_s": 3600.0}
            run = client.create_flow_run_from_deployment(morning, parameters=parameters)
            created.append(run.id)

            def processing() -> bool:
                return 2 <= len(lake_of(settings).files("images")) < len(keys)

            wait_for(processing, "the wave's first round under way", 240, [serve])
            stopped_while_processing = stop_serve(serve)
            assert serve.returncode == 0
            state = client.read_flow_run(run.id).state
            assert state is not None and state.type == StateType.COMPLETED, log_path.read_text()[-3000:]
            assert recorded(settings) == sorted(keys)  # the whole round, each upload once

            def scheduled() -> list:
                return client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[morning])),
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                    ),
                )

            [follow_up] = scheduled()
            created.append(follow_up.id)
            assert follow_up.parameters["day"] == DAY.isoformat() and follow_up.parameters["settle_s"] == 600.0
            assert 0 < follow_up.parameters["max_duration_s"] < 3600.0  # what is left of the window
            assert client.read_deployment(morning).paused  # no schedule fires while serve is down

            later = {f"v{i}/late.jpg": encode(synthetic_photo(320, 240, seed=50 + i), "JPEG") for i in range(3)}
            keys += put_uploads(settings.blob_url, DAY, later)  # the burst goes on while serve restarts
            serve = start_serve(env, log_path)
            wait_for(lambda: recorded(settings) == sorted(keys), "the follow-up run collects the rest", 240, [serve])
            resumed = client.read_flow_run(follow_up.id)
            assert resumed.state is not None and resumed.state.type == StateType.RUNNING  # still collecting
            stopped_while_collecting = stop_serve(serve)
            assert serve.returncode == 0
            state = client.read_flow_run(follow_up.id).state
            assert state is not None and state.type == StateType.COMPLETED
            [again] = scheduled()  # the window still had time: a follow-up of the follow-up
            created.append(again.id)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
            for run_id in created:  # no run of this test is left for another test's serve
                if client.read_flow_run(run_id).state_type == StateType.SCHEDULED:
                    client.delete_flow_run(run_id)
    assert recorded(settings) == sorted(keys)
    text = log_path.read_text()
    assert "Traceback" not in text and "waiting up to 120 s for 1 run(s) in flight" in text
    print(
        f"serve stopped in {stopped_while_processing:.1f} s while its wave processed a round,"
        f" in {stopped_while_collecting:.1f} s while it collected"
    )
