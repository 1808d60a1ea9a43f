"""The graywave REST API.

    graywave api --host 127.0.0.1 --port 8000          # docs at http://127.0.0.1:8000/docs
    curl -H "Authorization: Bearer $TOKEN" -F file=@IMG_0001.jpg http://127.0.0.1:8000/images/alice

Routes follow the design document's resource table (docs/api.md says what each method means).
They live in one router per resource (``api.routers``); what they share sits on ``app.state``
(``api.deps.State``); errors become JSON in ``api.errors``. The routes only speak HTTP: what
they do is the service layer's (``graywave.service``).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from graywave import __version__
from graywave.api import docs, errors, metrics
from graywave.api.deps import State
from graywave.api.limits import EarlyRefusal
from graywave.api.routers import analytics, health, images, jobs, uploads
from graywave.api.timeouts import BodyTimeout
from graywave.config import Settings
from graywave.errors import GraywaveError
from graywave.service.jobs import NO_JOBS, Jobs

DESCRIPTION = (
    "Uploads, image status, processed grayscale images and the daily analytics of graywave.\n\n"
    "Every route but the probes `/healthz` and `/readyz` needs `Authorization: Bearer <token>` "
    "(issue one with `graywave token issue USER`; with `GRAYWAVE_OIDC_ISSUER` set, a JWT of the app's identity "
    "provider works too, whose `scope` `graywave:admin` makes it an admin token): "
    "a user token reads and writes its own user's images and results, an admin token everything. "
    'Errors are JSON: `{"error": {"code", "message", "status"}}`.'
)


def _warm_up(state: State) -> None:
    """Build the lake's indexes now; a lake that cannot be read yet is one warning (``/readyz`` names
    it, and the first reads build the indexes), not a thread that dies with a traceback."""
    try:
        state.graywave.images.warm_up()
    except GraywaveError as error:
        errors.logger.warning("the lake's tables were not opened at start-up (the first reads open them): %s", error)


def create_app(settings: Settings | None = None, job_runner: Jobs = NO_JOBS) -> FastAPI:
    """The app, with ``job_runner`` to start and read its background jobs: none by default
    (``graywave api`` serves it with Prefect's: ``cli.asgi``)."""
    state = State.open(settings or Settings(), job_runner)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The lake's tables are opened in the background (their logs read): start-up waits for none.
        threading.Thread(target=_warm_up, args=(state,), name="graywave-warm-up", daemon=True).start()
        yield
        state.graywave.close()

    # No trailing-slash redirects: Starlette builds their Location from the Host header (an open redirect).
    # The docs pages are docs.install's: their assets served from here, not from a CDN.
    app = FastAPI(
        title="graywave",
        version=__version__,
        lifespan=lifespan,
        description=DESCRIPTION,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
    )
    app.state.graywave = state
    errors.install(app)
    app.add_middleware(BodyTimeout)  # inside EarlyRefusal: a body is read, and timed, only once it is let in
    app.add_middleware(EarlyRefusal)  # before any body is read
    metrics.install(app, state)  # the outermost middleware: it counts the early refusals too
    app.include_router(analytics.router)  # first: its aliases share the /images prefix
    app.include_router(images.router)
    app.include_router(uploads.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    docs.install(app)
    return app
