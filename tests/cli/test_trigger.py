"""``graywave wave trigger``: a wave deployment run now on graywave's Prefect server, with the
deployment's parameters (the prober found the README's ``prefect deployment run`` failing without
PREFECT_API_URL, after 26 s, with a "database is locked" traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from graywave.config import Settings
from graywave.flows.schedule import wave_deployments
from tests.helpers import GRAYWAVE, command_env


def graywave(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [GRAYWAVE, *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_a_wave_deployment_is_triggered_with_its_settle_window(settings: Settings, prefect_server: str):
    env = os.environ | {"PREFECT_API_URL": prefect_server}
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        for deployment in client.read_deployments():  # the server is the whole run's: start from none of ours
            if deployment.name in ("wave-morning", "wave-evening"):
                client.delete_deployment(deployment.id)
    missing = graywave("wave", "trigger", "morning", env=env)
    assert missing.returncode == 1 and "graywave serve" in missing.stdout  # nothing registered yet
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        for deployment in wave_deployments(settings):
            deployment.apply()
    done = graywave("wave", "trigger", "morning", "--date", "2026-11-25", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    [run_id] = re.findall(r"\(([0-9a-f-]{36})\)", done.stdout)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
        # The server is the whole run's: a scheduled wave run left there would be taken by the next
        # test's serve, and hold the deployment's one slot for its settle window.
        client.delete_flow_run(run.id)
        for deployment in client.read_deployments():
            if deployment.name in ("wave-morning", "wave-evening"):
                client.delete_deployment(deployment.id)
    assert run.parameters == {
        "name": "morning",
        "settle_s": settings.wave_settle_s,
        "max_duration_s": settings.wave_max_duration_s,
        "day": "2026-11-25",
    }
    bad = graywave("wave", "trigger", "noon", env=env)
    assert bad.returncode == 2 and "noon" in bad.stderr


def test_without_a_prefect_server_it_says_what_to_start(settings: Settings, tmp_path):
    env = command_env(tmp_path / "p")
    done = graywave("wave", "trigger", "evening", env=env)
    assert done.returncode == 1
    assert "server start" in done.stdout and "Traceback" not in done.stdout + done.stderr
