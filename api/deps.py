"""The routes' dependencies, in one place: the shared state (``app.state``), who is calling, and
the common parameters."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, File, Path, Query, Request, UploadFile
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from graywave.api.auth import principal_of
from graywave.api.errors import ApiError
from graywave.api.fairness import CHART_THREADS, Pool, UserLimits, bounded
from graywave.config import Settings
from graywave.errors import InvalidInput
from graywave.kernels.similarity import METRICS
from graywave.service.daily import iso_day
from graywave.service.graywave import Graywave
from graywave.service.identity import Authenticator, OidcVerifier
from graywave.service.jobs import Jobs
from graywave.service.terms import USER_ID_PATTERN
from graywave.service.tokens import Principal, TokenStore, open_token_store

T = TypeVar("T")


@dataclass(frozen=True)
class State:
    """What every request shares, opened once when the app is made (``app.state.graywave``)."""

    settings: Settings
    graywave: Graywave
    """The use cases, on the backends opened once for the app's life: every route goes through it
    (``graywave.daily`` keeps recent days' histograms until the lake changes)."""
    tokens: TokenStore
    processing: Pool
    """Slots for processing in a request (``GRAYWAVE_API_PROCESSING_SLOTS``); requests wait for one
    on the event loop, up to ``GRAYWAVE_API_PROCESSING_QUEUE`` of them."""
    charts: Pool
    """Threads that draw charts (``CHART_THREADS``), apart from the shared pool; requests wait for
    one on the event loop, up to ``GRAYWAVE_API_CHART_QUEUE`` of them."""
    users: UserLimits
    """Each user's expensive requests in flight (``GRAYWAVE_API_USER_INFLIGHT`` at most)."""
    writes: anyio.CapacityLimiter
    """Worker threads for the lake writes of requests (deletes): at most ``WRITE_THREADS`` at once,
    apart from the shared pool, so that writes waiting on the lake (a commit retried after a lost
    race) never hold the threads that other users' reads run on; the rest wait on the event loop."""
    jobs: Jobs
    """Starts and reads the background jobs (``service.jobs``), as the app was built with."""

    auth: Authenticator = field(init=False)
    """Who a bearer token is: graywave's own tokens (``tokens``) and the identity provider's JWTs
    (``GRAYWAVE_OIDC_*``), read by ``api.auth``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "auth", Authenticator(self.tokens, OidcVerifier.from_settings(self.settings)))

    @classmethod
    def open(cls, settings: Settings, jobs: Jobs) -> State:
        return cls(
            settings=settings,
            jobs=jobs,
            graywave=Graywave(settings),
            tokens=open_token_store(settings),
            processing=Pool(
                settings.api_processing_slots, settings.api_processing_queue, "uploads are being processed"
            ),
            writes=anyio.CapacityLimiter(WRITE_THREADS),
            charts=Pool(CHART_THREADS, settings.api_chart_queue, "charts are being drawn"),
            users=UserLimits(settings.api_user_inflight),
        )


WRITE_THREADS = 4
"""Lake writes of requests at once, per API process (``State.writes``)."""


async def writing(app: State, work: Callable[[], T]) -> T:
    """Run a request's lake write (a delete) on a worker thread of its own limiter (``State.writes``),
    never on the event loop and never on the shared pool that reads run on."""
    return await anyio.to_thread.run_sync(work, limiter=app.writes)


async def processing(app: State, user: str, work: Callable[[], T]) -> T:
    """Run CPU-heavy ``work`` (decoding, processing) for ``user`` on a worker thread, never on the
    event loop, in one of the app's processing slots. A request waits for a slot on the event loop
    (holding no thread) behind at most ``GRAYWAVE_API_PROCESSING_QUEUE`` others: a short burst of
    uploads is queued, not refused; past the queue, 503 ``busy`` with ``Retry-After``. One user has
    at most ``GRAYWAVE_API_USER_INFLIGHT`` such requests waiting or working: past that, 429."""
    return await bounded(app.users, user, app.processing, work)


async def drawing(app: State, user: str, work: Callable[[], T]) -> T:
    """Run a chart's ``work`` (its data read and its drawing) for ``user`` on a thread of the app's
    chart pool (``State.charts``), never on the shared pool that other routes run on; bounded per
    user and in its queue as ``processing`` is."""
    return await bounded(app.users, user, app.charts, work)


# The dependencies below do no I/O: ``async def`` keeps them on the event loop (FastAPI runs a plain
# ``def`` dependency on a worker thread, a hop that cost more than their work: bench/presign_bench.py).
async def state(request: Request) -> State:
    graywave_state: State = request.app.state.graywave
    return graywave_state


AppState = Annotated[State, Depends(state)]


class _BearerScheme(HTTPBearer):
    """The bearer scheme as the OpenAPI document shows it (Swagger UI's Authorize); it reads nothing:
    the token is read once, by ``api.auth``."""

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        return None


_bearer = _BearerScheme(auto_error=False, scheme_name="HTTPBearer")  # the name the OpenAPI document always had


async def caller(
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)], request: Request, app: AppState
) -> Principal:
    """The request's caller, as the early-refusal middleware found it or finds it now (``api.auth``)."""
    return await principal_of(request.scope, app)


Caller = Annotated[Principal, Depends(caller)]


async def admin(principal: Caller) -> Principal:
    if not principal.admin:
        raise ApiError(403, "this route needs an admin token")
    return principal


UserIdPath = Annotated[
    str,
    Path(
        description="A user id: 1 to 64 of A-Z, a-z, 0-9, '_' and '-' (400 `invalid_id` otherwise).",
        # Documented, not validated by FastAPI: a mismatch is the API's own 400 `invalid_id`.
        json_schema_extra={"pattern": USER_ID_PATTERN.pattern},
    ),
]


async def owner(user_id: UserIdPath, principal: Caller) -> str:
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise ApiError(400, f"user id {user_id!r} does not match [A-Za-z0-9_-]{{1,64}}", "invalid_id")
    if not principal.may_access(user_id):
        raise ApiError(403, f"this token may not access the data of {user_id!r}")
    return user_id


Admin = Annotated[Principal, Depends(admin)]
Owner = Annotated[str, Depends(owner)]


def _ascii_digits(value: object) -> object:
    """A number in a query or path as people write it: ASCII digits. Pydantic would read ``1_0``,
    ``+5``, `` 5`` and ``５`` as numbers too."""
    if isinstance(value, str) and not ASCII_DIGITS.fullmatch(value):
        raise ValueError(f"{value!r} is not a whole number written in the digits 0-9")
    return value


def _iso_day(value: object) -> object:
    """A day as ``service.daily.iso_day`` reads it (pydantic would take ``2026-11-25T00:00:00``
    and ``20261125`` too)."""
    if isinstance(value, str):
        try:
            return iso_day(value)
        except InvalidInput as error:
            raise ValueError(str(error)) from None
    return value


ASCII_DIGITS = re.compile(r"[0-9]{1,10}")
Number = BeforeValidator(_ascii_digits)
"""Every integer of a query or a path is read through this."""
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size."), Number]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip."), Number]
Day = Annotated[
    date | None,
    BeforeValidator(_iso_day),
    Query(alias="date", description="Day, YYYY-MM-DD (default: today in GRAYWAVE_TIMEZONE)."),
]
MetricQuery = Annotated[
    str, Query(description=f"One of {', '.join(METRICS)}.", pattern="^(" + "|".join(METRICS) + ")$")
]
UploadField = Annotated[UploadFile, File(description="The photo (JPEG, HEIC/HEIF, PNG, WebP, AVIF).")]


async def read_upload(file: UploadFile, app: State) -> bytes:
    """The uploaded bytes; 413 past ``GRAYWAVE_MAX_UPLOAD_BYTES``."""
    limit = app.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"uploads are limited to {limit} bytes")
    return data
