"""The analytics routes, and the design document's aliases of them under ``/images``."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from graywave.api.deps import AppState, Caller, Day, MetricQuery, Number, Owner, State, drawing
from graywave.api.errors import ERRORS, ApiError
from graywave.api.fairness import user_key
from graywave.api.models import Error, Median, Neighbour, Similar, Weekly
from graywave.kernels.similarity import DEFAULT_METRIC, check_metric
from graywave.service.daily import Week
from graywave.service.plots import median_png, weekly_png

router = APIRouter(tags=["analytics"], responses=ERRORS)


def _week(app: State, user_id: str, week: str | None) -> Week:
    return app.graywave.daily.week(user_id, week, app.settings.today())


def _weekly(app: State, user_id: str, week: str | None) -> Weekly:
    found = _week(app, user_id, week)
    return Weekly(
        user_id=user_id,
        week=found.name,
        monday=found.monday.isoformat(),
        sunday=found.sunday.isoformat(),
        images=found.images.to_dicts(),
    )


def _similar(app: State, user_id: str, n: int, day: date | None, metric: str) -> Similar:
    when = day or app.settings.today()
    frame = app.graywave.daily.similar(user_id, n, when, check_metric(metric))
    neighbours = [
        Neighbour(rank=r["rank"], user_id=r["neighbour_id"], distance=r["distance"]) for r in frame.to_dicts()
    ]
    return Similar(user_id=user_id, date=when.isoformat(), metric=metric, neighbours=neighbours)


PNG: dict[int | str, dict[str, Any]] = {
    200: {"description": "A PNG chart.", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    429: {
        "model": Error,
        "description": "The user's charts and other expensive requests in flight are at their limit.",
    },
    503: {"model": Error, "description": "Every chart thread is busy and the queue is full: retry after Retry-After."},
}
"""The documented answers of the chart routes: drawn on the chart threads (``api.deps.drawing``),
bounded per user (429) and in their queue (503)."""


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png")


N_BOUNDS = {"minimum": 1, "maximum": 1000}
"""Documented, not validated by FastAPI: the route answers its own 400 outside them."""
WeekQuery = Annotated[
    str | None,
    Query(
        description=(
            "ISO week, e.g. 2026-W48 (default: this week): four ASCII digits, -W, two. 400 for any other"
            " form and for a week the calendar does not have (W53 of a 52-week year, 9999-W52)."
        ),
        json_schema_extra={"pattern": r"^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$"},
    ),
]


@router.get("/users/{user_id}/weekly", response_model=Weekly, summary="Every image histogram of a user in an ISO week")
@router.get(
    "/images/weekly/{user_id}",
    response_model=Weekly,
    summary="Alias of /users/{user_id}/weekly (the design document's route)",
)
def get_weekly(user_id: Owner, app: AppState, week: WeekQuery = None) -> Weekly:
    return _weekly(app, user_id, week)


@router.get("/analytics/median", response_model=Median, summary="The median histogram of a day across all users")
@router.get(
    "/images/day/median", response_model=Median, summary="Alias of /analytics/median (the design document's route)"
)
def get_median(_: Caller, app: AppState, day: Day = None) -> Median:
    when = day or app.settings.today()
    return Median(date=when.isoformat(), **app.graywave.daily.median(when))


@router.get(
    "/users/{user_id}/weekly.png",
    response_class=Response,
    responses=PNG,
    summary="A chart of a user's image histograms in an ISO week, one line per image",
)
async def get_weekly_png(user_id: Owner, app: AppState, week: WeekQuery = None) -> Response:
    def draw() -> bytes:
        found = _week(app, user_id, week)
        return weekly_png(user_id, found.name, found.images, app.settings.bins)

    return _png(await drawing(app, user_id, draw))


@router.get(
    "/analytics/median.png",
    response_class=Response,
    responses=PNG,
    summary="A chart of the median histogram of a day across all users",
)
async def get_median_png(principal: Caller, app: AppState, day: Day = None) -> Response:
    when = day or app.settings.today()
    return _png(await drawing(app, user_key(principal), lambda: median_png(when, app.graywave.daily.median(when))))


@router.get(
    "/users/{user_id}/similar", response_model=Similar, summary="The n users with the most similar histograms of a day"
)
def get_similar(
    user_id: Owner,
    app: AppState,
    n: Annotated[int, Query(ge=1, le=1000), Number] = 5,
    day: Day = None,
    metric: MetricQuery = DEFAULT_METRIC,
) -> Similar:
    return _similar(app, user_id, n, day, metric)


@router.get(
    "/images/similarity/{user_id}/{n}",
    response_model=Similar,
    summary="Alias of /users/{user_id}/similar (the design document's route)",
)
def get_similar_alias(
    user_id: Owner,
    n: Annotated[int, Path(description="How many users, 1 to 1000.", json_schema_extra=N_BOUNDS), Number],
    app: AppState,
    day: Day = None,
    metric: MetricQuery = DEFAULT_METRIC,
) -> Similar:
    if not 1 <= n <= 1000:
        raise ApiError(400, "n must be between 1 and 1000")
    return _similar(app, user_id, n, day, metric)
