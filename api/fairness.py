"""Bounded work, fair between users: no user's burst of expensive requests holds up another's.

Two bounds, on every expensive request (charts, ``?wait=true`` uploads, replaces, reprocessing
inside a request):

- **Per user** (``UserLimits``): at most ``GRAYWAVE_API_USER_INFLIGHT`` of one user's expensive
  requests are in flight in an API process, waiting or working; one more answers 429
  ``too_many_requests`` with ``Retry-After`` at once, holding nothing. The user is the one whose
  data the work is for (the path's user), or the caller where there is none (the day's median).
- **Shared** (``Pool``): the work runs on a worker thread of the pool's own ``CapacityLimiter``
  (its slots), never on the event loop and never on the shared thread pool that every plain ``def``
  route runs on; requests wait for a slot on the event loop, holding no thread, behind at most
  ``queue`` others; past that, 503 ``busy`` with ``Retry-After``.

Both are per process and rest on the event loop's single thread: a count is read and changed
between two awaits, so no lock is needed. A background job is bounded across processes by its
Prefect flow run instead (``flows.job_runs.start``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from graywave.api.errors import ApiError
from graywave.service.tokens import Principal

T = TypeVar("T")

BUSY_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 ``busy``: a full queue drains in seconds."""
USER_RETRY_AFTER_S = 1
"""``Retry-After`` of a 429 ``too_many_requests``: the user's own requests in flight end soon."""
CHART_THREADS = 2
"""Charts drawn at once per API process (``State.charts``): matplotlib draws one figure at a time
anyway (``Figure._render_lock``), a second thread reads the next chart's data meanwhile."""


def too_many(user: str, limit: int, what: str = "expensive requests") -> ApiError:
    return ApiError(
        429,
        f"{user} has {limit} {what} in flight already; retry when one has finished",
        "too_many_requests",
        headers={"Retry-After": str(USER_RETRY_AFTER_S)},
    )


def user_key(principal: Principal) -> str:
    """Whose limit a caller's request counts against when the request names no user: the token's
    user, or an admin token's label (``admin:`` is no user id: user ids have no ``:``)."""
    return principal.user_id if principal.user_id is not None else f"admin:{principal.label}"


@dataclass
class UserLimits:
    """At most ``limit`` requests of one user in flight (``hold``); one more is refused with 429."""

    limit: int
    _counts: dict[str, int] = field(default_factory=dict)

    def in_flight(self, user: str) -> int:
        return self._counts.get(user, 0)

    @asynccontextmanager
    async def hold(self, user: str) -> AsyncIterator[None]:
        count = self._counts.get(user, 0)
        if count >= self.limit:
            raise too_many(user, self.limit)
        self._counts[user] = count + 1
        try:
            yield
        finally:
            left = self._counts[user] - 1
            if left:
                self._counts[user] = left
            else:
                del self._counts[user]  # the map holds only users with work in flight


@dataclass
class Pool:
    """Worker threads of their own (``slots``), and a bounded queue of requests waiting for one."""

    slots: int
    queue: int
    what: str
    """What the slots do, for the 503's message: "uploads are being processed", "charts are being drawn"."""
    limiter: anyio.CapacityLimiter = field(init=False)
    admitted: int = field(init=False, default=0)
    """Requests waiting for a slot or on one. Counted here, on the event loop, as a request is let in:
    the limiter's own count of waiters lags, since ``to_thread.run_sync`` yields once before it waits,
    and two requests arriving together would both find the queue free."""

    def __post_init__(self) -> None:
        self.limiter = anyio.CapacityLimiter(self.slots)

    def busy(self) -> ApiError:
        return ApiError(
            503,
            f"{self.slots} {self.what} now and {self.queue} wait; retry in a few seconds",
            "busy",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` on a worker thread of this pool, after a wait on the event loop; 503 when the
        queue is full."""
        if self.admitted >= self.slots + self.queue:
            raise self.busy()
        self.admitted += 1
        try:
            return await anyio.to_thread.run_sync(work, limiter=self.limiter)
        finally:
            self.admitted -= 1


async def bounded(users: UserLimits, user: str, pool: Pool, work: Callable[[], T]) -> T:
    """``work`` for ``user``: counted against the user's limit (429) while it waits in the pool's
    queue (503 when full) and runs on one of its threads."""
    async with users.hold(user):
        return await pool.run(work)
