"""The API's app as ``graywave api`` serves it: the composition of the API (``api.app``) with the
flows' runner of background jobs (``flows.jobs.PrefectJobs``), which the API does not import.

    uvicorn graywave.cli.asgi:create_app --factory --http graywave.api.timeouts:SlowClientCutoff

The commands name this factory to uvicorn as a string (``cli.serving``): the CLI's own start-up
imports no API code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from graywave.api.app import create_app as api_app
from graywave.config import Settings
from graywave.flows.jobs import PrefectJobs

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The API with Prefect's background jobs (runs of the deployments that ``graywave serve`` runs)."""
    return api_app(settings, job_runner=PrefectJobs())
