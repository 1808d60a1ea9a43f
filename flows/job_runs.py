"""Background jobs as runs of a Prefect deployment that ``graywave serve`` registers and runs:
started and read through Prefect's client, for the API (``flows.jobs.PrefectJobs``, which imports
this module on the first job request).

A job is started by deployment name (``flows.names.REPROCESS_JOB``), and its state read back.
Without ``PREFECT_API_URL`` there is no Prefect server that a ``graywave serve`` could share with
the API, so there are no jobs: ``JobsUnavailable`` (503).

A job is started only when a ``graywave serve`` runs its deployment; else its run would wait,
``SCHEDULED``, forever, behind a 202. The server knows: a runner polls it for its deployments' runs
every few seconds (``PREFECT_RUNNER_POLL_FREQUENCY``, 10 s), which sets the deployment's
``last_polled``, and a stopping ``graywave serve`` pauses its deployments. A deployment that is
paused, or not polled within ``PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS``
(60 s: the rule by which Prefect's server marks a deployment ``NOT_READY``), has no runner:
``JobsUnavailable``, with the reason.

How many images a job was asked to reprocess is kept on its flow run, as the label
``IMAGES_LABEL``: given by the API when it starts the job, else set by the job when it lists them
(``flows.reprocess``).

One job per scope (a user's images, or everyone's) at a time, across every API process and
machine: the Prefect server, which they share, is asked. A job's flow run carries its scope as a
tag (``scope_tag``); while a run of that tag is not in a final state (scheduled, pending, running,
paused, cancelling), another start is refused (``JobInProgress``, 429) naming it. Two starts at the same moment
(two API processes) cannot both pass that check: each creates its run with the idempotency key
``<tag> after <the scope's latest run>``, which the server keeps unique, so the second is given the
first's run; it sees that the run is not its own (the ``REQUEST_LABEL`` nonce it sent is not on it)
and is refused too.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import TERMINAL_STATES, DeploymentStatus, FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, get_current_settings

from graywave.flows.names import REPROCESS_FAILURES_ARTIFACT
from graywave.service.jobs import JobInProgress, JobsUnavailable, job_not_found


def _check_configured() -> None:
    if not PREFECT_API_URL.value():
        raise JobsUnavailable(
            "reprocessing many images runs as a background job on Prefect: set PREFECT_API_URL, for this API"
            " and for `graywave serve`, to one Prefect server"
        )


IMAGES_LABEL = "graywave.images"
"""The flow run label that holds how many images a reprocessing job was asked for: set here when the
API starts the job, else by the job when it lists them (``flows.reprocess``); read for ``GET /jobs/{id}``."""
REQUEST_LABEL = "graywave.request"
"""The flow run label that holds the nonce of the request that created the run (one job per scope)."""
UNFINISHED = [state for state in StateType if state not in TERMINAL_STATES]
JOB_RETRY_AFTER_S = 30
"""When to ask again for a job whose scope has one queued or running (``Retry-After``): jobs take minutes."""


def scope_tag(scope: str) -> str:
    """The flow run tag of the jobs of ``scope``: a user id, or ``*`` for every user's images."""
    return f"graywave.scope:{scope}"


def _already(scope: str, run: FlowRun) -> JobInProgress:
    whose = "every user" if scope == "*" else scope
    return JobInProgress(
        f"a reprocessing job of {whose} is queued or running already (/jobs/{run.id}, {run.state_name});"
        " one at a time: retry once it has finished",
        JOB_RETRY_AFTER_S,
    )


def _runs(
    client: SyncPrefectClient, deployment_id: uuid.UUID, tag: str, states: list[StateType] | None
) -> list[FlowRun]:
    """The latest run of ``deployment_id`` with ``tag`` (in one of ``states``), as a list of 0 or 1."""
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            tags=FlowRunFilterTags(all_=[tag]),
            state=None if states is None else FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=1,
    )


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


def start(deployment: str, parameters: dict[str, Any], *, scope: str, count: int | None = None) -> FlowRun:
    """A new run of ``deployment`` (``flow/deployment``) with these parameters, scheduled now;
    ``JobsUnavailable`` when no ``graywave serve`` runs that deployment; ``JobInProgress`` while a
    run of the same ``scope`` (a user id, or ``*``) is not finished. ``count``: the images it is
    asked for."""
    _check_configured()
    try:
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            problem = not_served(found)
            if problem is not None:
                raise JobsUnavailable(f"no job can start now: {problem}")
            tag = scope_tag(scope)
            unfinished = _runs(client, found.id, tag, UNFINISHED)
            if unfinished:
                raise _already(scope, unfinished[0])
            latest = _runs(client, found.id, tag, None)
            nonce = uuid.uuid4().hex
            labels: dict[str, bool | int | float | str] = {REQUEST_LABEL: nonce}
            if count is not None:
                labels[IMAGES_LABEL] = count
            run = client.create_flow_run_from_deployment(
                found.id,
                parameters=parameters,
                tags=["graywave", tag],
                labels=labels,
                idempotency_key=f"{tag} after {latest[0].id if latest else 'none'}",
            )
            if run.labels.get(REQUEST_LABEL) != nonce:  # another request's run, created since the check
                raise _already(scope, run)
            return run
    except ObjectNotFound:
        raise JobsUnavailable(
            f"no deployment {deployment} on the Prefect server: is `graywave serve` running?"
        ) from None
    except httpx.HTTPError as error:
        raise JobsUnavailable(f"the Prefect server cannot be reached ({type(error).__name__})") from None


def read(job_id: uuid.UUID, deployment: str) -> tuple[FlowRun, list[dict[str, Any]]]:
    """The flow run ``job_id`` of ``deployment``, and the rows of its failures table (empty until it
    has finished); ``NotFound`` for any other id, and for every id without a Prefect server."""
    missing = job_not_found(job_id)
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
        raise JobsUnavailable(f"the Prefect server cannot be reached ({type(error).__name__})") from None
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
