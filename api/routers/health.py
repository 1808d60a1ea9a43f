"""Probes for a load balancer or an orchestrator, without a token: ``/healthz`` (the process
answers) and ``/readyz`` (its backends answer too). They say ``ok`` or name what is unavailable,
never where it is: paths, buckets and MongoDB URIs go to the log only."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from graywave.api.deps import AppState
from graywave.api.errors import error_response
from graywave.api.models import Error, Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The API process is alive (no token, no backend checked)")
async def get_healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    summary="The API can reach its blob store, lake and MongoDB (no token); 503 names those it cannot",
    responses={503: {"model": Error, "description": "A backend is unavailable: the message names it."}},
)
def get_readyz(app: AppState) -> Ready | JSONResponse:
    # A plain def: the checks block (a HEAD of the bucket, a MongoDB ping), so they run on the threadpool.
    result = app.graywave.readiness()
    if not result.ready:
        states = "; ".join(f"{name} {'ok' if ok else 'unavailable'}" for name, ok in result.checks.items())
        return error_response(503, "unavailable", f"not ready: {states}")
    return Ready(status="ready", checks=dict.fromkeys(result.checks, "ok"))
