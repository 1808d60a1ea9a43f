"""Background jobs: runs of a Prefect deployment that ``graywave serve`` registers and runs.

The API starts them through Prefect's API, by deployment name (``service.images.REPROCESS_JOB``),
and reads their state back; it never imports the flows. Without ``PREFECT_API_URL`` there is no
Prefect server that a ``graywave serve`` could share with this API, so there are no jobs: 503.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

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


def start(deployment: str, parameters: dict[str, Any]) -> FlowRun:
    """A new run of ``deployment`` (``flow/deployment``) with these parameters, scheduled now."""
    _check_configured()
    try:
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            return client.create_flow_run_from_deployment(found.id, parameters=parameters, tags=["graywave"])
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
    for artifact in artifacts:
        if artifact.key == REPROCESS_FAILURES_ARTIFACT:  # a table artifact's data is its rows, as JSON text
            data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            return run, list(data or [])
    return run, []
