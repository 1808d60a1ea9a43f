"""The API's runner of background jobs: Prefect flow runs of the reprocessing deployment that
``graywave serve`` registers (``service.jobs.Jobs``, built into the app by ``cli.asgi``).

Prefect itself (``flows.job_runs``) is imported on the first job request, not when the app is
built: Prefect's import makes its home folder (``./data/prefect``) whenever the folder above it
exists, and an API that never starts a job must leave no such folder behind.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from graywave.flows.names import REPROCESS_JOB
from graywave.service.jobs import JobRun

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun


class PrefectJobs:
    """Reprocessing jobs as runs of the deployment ``deployment`` (``flow/deployment``)."""

    def __init__(self, deployment: str = REPROCESS_JOB):
        self.deployment = deployment

    def start_reprocess(self, user_id: str | None, count: int) -> JobRun:
        from graywave.flows import job_runs

        run = job_runs.start(self.deployment, {"user_id": user_id}, scope=user_id or "*", count=count)
        return JobRun(run.id, run.parameters.get("user_id"), _state(run), count)

    def read_reprocess(self, job_id: uuid.UUID) -> JobRun:
        from graywave.flows import job_runs

        run, failed = job_runs.read(job_id, self.deployment)
        return JobRun(run.id, run.parameters.get("user_id"), _state(run), job_runs.count_of(run), failed)


def _state(run: FlowRun) -> str:
    """The name of a run's state type (``SCHEDULED``...), ``UNKNOWN`` before it has one."""
    return run.state_type.value if run.state_type else "UNKNOWN"
