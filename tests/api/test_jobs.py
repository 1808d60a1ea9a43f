"""Bulk reprocessing as a background job, end to end on real processes: a Prefect server,
``graywave serve`` (which runs the ``reprocess`` deployment) and ``graywave api``, on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prefect.client.schemas.responses import DeploymentResponse

from graywave.config import Settings
from graywave.flows import job_runs as jobs
from graywave.service.backends import Backends
from graywave.service.images import Images
from graywave.service.samples import encode, synthetic_photo
from graywave.service.tokens import issue_token
from graywave.service.wave import run_wave
from tests.helpers import DAY, GRAYWAVE, SERVER_TIMEOUT_S, free_port, put_uploads, wait_for


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_serve_refuses_to_start_without_a_prefect_server_it_can_reach(settings):
    env = os.environ | {"PREFECT_API_URL": ""}
    alone = subprocess.run([GRAYWAVE, "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 1 and "PREFECT_API_URL" in alone.stdout
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
    unreachable = subprocess.run([GRAYWAVE, "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert unreachable.returncode == 1 and "cannot be reached" in unreachable.stdout


def test_reprocessing_many_images_runs_as_a_prefect_flow_run_and_reports_each_image(
    settings: Settings, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    settings = Settings()
    photos = {f"alice/{k}.jpg": encode(synthetic_photo(64, 48, seed=k), "JPEG", quality=90) for k in range(4)}
    keys = put_uploads(settings.blob_url, DAY, photos)
    run_wave(settings, DAY, "morning", log=lambda _: None)
    with Backends.open(settings) as backends:
        before = {e.source_key: e for e in Images(settings, backends).entries(DAY, "alice")}
        backends.blobs.delete(keys[0])  # this one's original vanishes: it must be reported and kept
    alice = issue_token(settings, "alice", admin=False)
    bob = issue_token(settings, "bob", admin=False)

    env = os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "GRAYWAVE_API_INLINE_REPROCESS_MAX": "2",
        "GRAYWAVE_TIMEZONE": "UTC",
    }
    port = free_port()
    serve_log = (tmp_path / "serve.log").open("w+")
    processes = [
        subprocess.Popen([GRAYWAVE, "serve"], env=env, stdout=serve_log, stderr=subprocess.STDOUT),
        subprocess.Popen(
            [GRAYWAVE, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ),
    ]
    try:
        url = f"http://127.0.0.1:{port}"

        def served() -> bool:  # registered, and not left paused by another test's serve: this one runs it
            found = httpx.get(
                f"{prefect_server}/deployments/name/graywave-reprocess/reprocess", timeout=SERVER_TIMEOUT_S
            )
            return found.status_code == 200 and not found.json()["paused"] and found.json()["last_polled"]

        wait_for(served, "graywave serve registers and polls the reprocess deployment", 120, processes)
        wait_for(
            lambda: httpx.get(f"{url}/openapi.json", timeout=SERVER_TIMEOUT_S).status_code == 200,
            "the API starts",
            60,
            processes,
        )

        answer = httpx.put(f"{url}/images/alice", headers={"Authorization": f"Bearer {alice}"}, timeout=60)
        assert answer.status_code == 202, answer.text  # 4 images > 2: not inside the request
        job = answer.json()
        assert (job["kind"], job["user_id"], job["count"]) == ("reprocess", "alice", 4)
        assert answer.headers["location"] == job["links"]["self"] == f"/jobs/{job['job_id']}"

        def finished() -> dict | None:
            state = httpx.get(
                f"{url}{job['links']['self']}", headers={"Authorization": f"Bearer {alice}"}, timeout=SERVER_TIMEOUT_S
            ).json()
            return state if state["state"] in ("COMPLETED", "FAILED", "CRASHED") else None

        done = wait_for(finished, "the reprocessing job finishes", 180, processes)
        assert done["state"] == "COMPLETED"
        assert done["count"] == 4  # the count of the PUT's answer, kept by the job (it was null)
        run = httpx.get(f"{prefect_server}/flow_runs/{job['job_id']}", timeout=SERVER_TIMEOUT_S).json()
        assert run["name"] == "reprocess-alice"  # in the Prefect UI: whose images, not a random name
        [failure] = done["failed"]
        assert (failure["source_key"], failure["reason"]) == (keys[0], "vanished")
        other = httpx.get(
            f"{url}{job['links']['self']}", headers={"Authorization": f"Bearer {bob}"}, timeout=SERVER_TIMEOUT_S
        )
        assert other.status_code == 404  # another user's job is not shown to exist

        serve = processes[0]
        stopping = time.monotonic()
        serve.terminate()  # as systemd or docker stop would
        serve.wait(timeout=30)
        assert time.monotonic() - stopping < 10
        serve_log.seek(0)
        assert "Traceback" not in serve_log.read()

        # No serve, the Prefect server still up: a job would stay SCHEDULED forever behind a 202.
        unserved = httpx.put(f"{url}/images/alice", headers={"Authorization": f"Bearer {alice}"}, timeout=60)
        assert error_of(unserved) == (503, "jobs_unavailable"), unserved.text
        assert "graywave serve is not running" in unserved.json()["error"]["message"]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    with Backends.open(settings) as backends:
        after = {e.source_key: e for e in Images(settings, backends).entries(DAY, "alice")}
    assert sorted(after) == sorted(keys)  # nothing lost, nothing duplicated
    assert after[keys[0]].record == before[keys[0]].record  # kept as it was
    for key in keys[1:]:
        assert after[key].wave == "api" and after[key].record.processed_at > before[key].record.processed_at  # type: ignore[union-attr]


def deployment(**fields) -> DeploymentResponse:
    return DeploymentResponse(id=uuid.uuid4(), name="reprocess", flow_id=uuid.uuid4(), **fields)


def test_a_job_starts_only_on_a_deployment_that_a_runner_polls():
    """Prefect's own rule (its foreman marks a deployment NOT_READY after 60 s without a poll),
    checked by the API itself: the foreman does not run on every server."""
    now = datetime.now(UTC)
    assert jobs.not_served(deployment(last_polled=now - timedelta(seconds=5), status="READY"), now) is None
    never = jobs.not_served(deployment(last_polled=None), now)
    assert never is not None and "no graywave serve has ever run" in never
    quiet = jobs.not_served(deployment(last_polled=now - timedelta(seconds=95), status="READY"), now)
    assert quiet is not None and "for 95 s" in quiet  # a serve killed with kill -9: not paused, not polling
    assert jobs.not_served(deployment(last_polled=now, status="NOT_READY"), now) is not None
    paused = jobs.not_served(deployment(last_polled=now, paused=True), now)
    assert paused is not None and "paused" in paused  # serve stopped: it pauses its deployments
