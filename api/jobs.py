"""Background jobs: runs of a Prefect deployment that ``graywave serve`` registers and runs.

The API starts them through Prefect's API, by deployment name (``service.images.REPROCESS_JOB``),
and reads their state back; it never imports the flows. Without ``PREFECT_API_URL`` there is no
Prefect server that a ``graywave serve`` could share with this API, so there are no jobs: 503.

A job is started only when a ``graywave serve`` runs its deployment; else its run would wait,
``SCHEDULED``, forever, behind a 202. The server knows: a runner polls it for its deployments' runs
every few seconds (``PREFECT_RUNNER_POLL_FREQUENCY``, 10 s), which sets the deployment's
``last_polled``, and a stopping ``graywave serve`` pauses its deployments. A deployment that is
paused, or not polled within ``PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS``
(60 s: the rule by which Prefect's server marks a deployment ``NOT_READY``), has no runner: 503,
with the reason.

How many images a job was asked to reprocess is kept on its flow run, as the label
``IMAGES_LABEL``: given by the API when it starts the job, else set by the job when it lists them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import DeploymentStatus, FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, get_current_settings

from graywave.api.errors import ApiError
from graywave.service.images import REPROCESS_FAILURES_ARTIFACT


def _unavailable(message: str) -> ApiError:
    return ApiError(503, message, "jobs_unavailable")


def _check_configured() -> None:
    if not PREFECT_API_URL.value():
        raise _unavailable(
            "reprocessing many images runs as a background job on Prefect: set PREFECT_API_URL, for this API"
            " and for `graywave serve`, to one Prefect server"
        )


IMAGES_LABEL = "graywave.images"
"""The flow run label that holds how many images a reprocessing job was asked for."""


def not_served(found: DeploymentResponse, now: datetime | None = None) -> str | None:
    """Why no runner would start a run of ``found`` now; None when one polls it."""
    name = found.name
    if found.paused:
        return f"graywave serve is not running: the deployment {name} is paused (serve pauses it as it stops)"
    if found.last_polled is None:
        return f"no graywave serve has ever run the deployment {name}: start `graywave serve`"
    timeout_s = get_current_settings().server.services.foreman.deployment_last_polled_timeout_seconds
    quiet_s = ((now or datetime.now(UTC)) - found.last_polled).total_seconds()
    if found.status == DeploymentStatus.NOT_READY or quiet_s > timeout_s:
        return (
            f"graywave serve is not running: no runner has asked for the deployment {name}'s runs for"
            f" {quiet_s:.0f} s (since {found.last_polled:%Y-%m-%d %H:%M:%S} UTC); start `graywave serve`"
        )
    return None


def start(deployment: str, parameters: dict[str, Any], *, count: int | None = None) -> FlowRun:
    """A new run of ``deployment`` (``flow/deployment``) with these parameters, scheduled now; 503
    when no ``graywave serve`` runs that deployment. ``count``: the images it is asked for."""
    _check_configured()
    try:
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            problem = not_served(found)
            if problem is not None:
                raise _unavailable(f"no job can start now: {problem}")
            return client.create_flow_run_from_deployment(
                found.id,
                parameters=parameters,
                tags=["graywave"],
                labels=None if count is None else {IMAGES_LABEL: count},
            )
    except ObjectNotFound:
        raise _unavailable(f"no deployment {deployment} on the Prefect server: is `graywave serve` running?") from None
    except httpx.HTTPError as error:
        raise _unavailable(f"the Prefect server cannot be reached ({type(error).__name__})") from None


def read(job_id: uuid.UUID, deployment: str) -> tuple[FlowRun, list[dict[str, Any]]]:
    """The flow run ``job_id`` of ``deployment``, and the rows of its failures table (empty until it
    has finished); ``ApiError`` 404 for any other id, and for every id without a Prefect server."""
    missing = ApiError(404, f"job {job_id} does not exist")
    if not PREFECT_API_URL.value():
        raise missing
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(job_id)
            if run.deployment_id is None or run.deployment_id != client.read_deployment_by_name(deployment).id:
                raise missing
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
    except ObjectNotFound:
        raise missing from None
    except httpx.HTTPError as error:
        raise _unavailable(f"the Prefect server cannot be reached ({type(error).__name__})") from None
    return run, failures(artifacts)


def count_of(run: FlowRun) -> int | None:
    """How many images the job ``run`` was asked to reprocess, once known (``IMAGES_LABEL``)."""
    value = run.labels.get(IMAGES_LABEL)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def failures(artifacts: list[Any]) -> list[dict[str, Any]]:
    """The rows of a job's failures table among its run's artifacts (empty until it has finished)."""
    for artifact in artifacts:
        if artifact.key == REPROCESS_FAILURES_ARTIFACT:  # a table artifact's data is its rows, as JSON text
            data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            return list(data or [])
    return []
