"""Background jobs: the reprocessing of many images, run outside the request that asks for it.

The service says what a job is (``JobRun``), what starting and reading one takes (``Jobs``) and how
either is refused (``JobsUnavailable``, ``JobInProgress``, ``NotFound``). Who runs them is chosen
where the API's app is built: ``flows.jobs.PrefectJobs`` runs each as a Prefect flow run of the
deployment that ``graywave serve`` registers (``graywave api`` builds its app with it, in
``cli.asgi``); an app built without a runner has ``NO_JOBS``. The API reaches a runner only
through this interface, and never imports Prefect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from graywave.errors import BackendUnavailable, GraywaveError, NotFound


class JobsUnavailable(BackendUnavailable):
    """No background job can start now (no Prefect server, or no ``graywave serve`` runs the job's
    deployment): the message says why, and what to start."""


class JobInProgress(GraywaveError, RuntimeError):
    """A job of the same scope (a user's images, or everyone's) is queued or running: one at a time.
    ``retry_after_s``: when to ask again (jobs take minutes)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def job_not_found(job_id: uuid.UUID) -> NotFound:
    """The error of a job id that is not a reprocessing job (or another user's: it is not shown to exist)."""
    return NotFound(f"job {job_id} does not exist")


@dataclass(frozen=True)
class JobRun:
    """A reprocessing job as its runner reports it."""

    job_id: uuid.UUID
    user_id: str | None
    """Whose images; None: every user's."""
    state: str
    """The runner's state: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED..., or UNKNOWN."""
    count: int | None
    """How many images it was asked to reprocess, once known."""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Once it has finished: the rows of the images it could not reprocess (source key, reason...)."""


class Jobs(Protocol):
    """Starts and reads reprocessing jobs."""

    def start_reprocess(self, user_id: str | None, count: int) -> JobRun:
        """A new job that reprocesses ``user_id``'s handled images (everyone's for None), ``count``
        of them; ``JobsUnavailable`` when none can start now, ``JobInProgress`` while one of the
        same scope is not finished."""
        ...

    def read_reprocess(self, job_id: uuid.UUID) -> JobRun:
        """The job ``job_id``; ``NotFound`` for any id that is not a reprocessing job."""
        ...


class _NoJobs:
    """The runner of an app built without one: no job starts, none exists."""

    def start_reprocess(self, user_id: str | None, count: int) -> JobRun:
        raise JobsUnavailable(
            "this API was built without background jobs: serve it with `graywave api`"
            " (or uvicorn's factory graywave.cli.asgi:create_app)"
        )

    def read_reprocess(self, job_id: uuid.UUID) -> JobRun:
        raise job_not_found(job_id)


NO_JOBS: Jobs = _NoJobs()
