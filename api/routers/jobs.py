"""Background jobs: a reprocessing of many images, started by ``PUT /images[/{user_id}]``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from graywave.api.deps import Caller
from graywave.api.errors import ERRORS, ApiError
from graywave.api.models import Error, Job
from graywave.service.images import REPROCESS_JOB

router = APIRouter(tags=["jobs"], responses=ERRORS)


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    responses={503: {"model": Error}},
    summary="A background job: its state, and once it has finished, the images it could not reprocess",
)
async def get_job(job_id: uuid.UUID, principal: Caller) -> Job:
    from graywave.api import jobs  # Prefect, imported here: at start-up it would make PREFECT_HOME

    run, failed = await run_in_threadpool(jobs.read, job_id, REPROCESS_JOB)
    user_id = run.parameters.get("user_id")
    if not (principal.admin or (user_id is not None and principal.may_access(user_id))):
        raise ApiError(404, f"job {job_id} does not exist")  # another user's job is not shown to exist
    return Job.of(run, failed, count=jobs.count_of(run))
