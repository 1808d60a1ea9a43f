"""Background jobs: a reprocessing of many images, started by ``PUT /images[/{user_id}]``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from graywave.api.deps import AppState, Caller
from graywave.api.errors import ERRORS
from graywave.api.models import Error, Job
from graywave.service.jobs import job_not_found

router = APIRouter(tags=["jobs"], responses=ERRORS)


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    responses={503: {"model": Error}},
    summary="A background job: its state, and once it has finished, the images it could not reprocess",
)
async def get_job(job_id: uuid.UUID, principal: Caller, app: AppState) -> Job:
    run = await run_in_threadpool(app.jobs.read_reprocess, job_id)
    if not (principal.admin or (run.user_id is not None and principal.may_access(run.user_id))):
        raise job_not_found(job_id)  # another user's job is not shown to exist
    return Job.of(run)
