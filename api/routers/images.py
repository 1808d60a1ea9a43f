"""The images resource: lists, one image, reprocessing (PUT) and deletion (DELETE) everywhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from graywave.api.deps import (
    Admin,
    AppState,
    Limit,
    Offset,
    Owner,
    State,
    UploadField,
    processing,
    read_upload,
    writing,
)
from graywave.api.errors import ERRORS
from graywave.api.fairness import user_key
from graywave.api.models import Count, Error, Image, ImagePage, Job, Reprocessed
from graywave.service.images import ReprocessLater

router = APIRouter(tags=["images"], responses=ERRORS)


def _page(app: State, user_id: str | None, limit: int, offset: int, path: str) -> ImagePage:
    entries, total = app.graywave.images.page(app.settings.today(), user_id, offset, limit)
    following = f"{path}?limit={limit}&offset={offset + limit}" if offset + limit < total else None
    return ImagePage(items=[Image.of(e) for e in entries], total=total, limit=limit, offset=offset, next=following)


REPROCESSING: dict[int | str, dict[str, Any]] = {
    202: {"model": Job, "description": "More than a few images: a background job (a Prefect flow run) started."},
    429: {
        "model": Error,
        "description": "A job of the same user is queued or running, or the user's expensive requests in flight"
        " are at their limit: retry after Retry-After.",
    },
    503: {"model": Error, "description": "Busy, or no Prefect server to run a background job on."},
}


async def _reprocess(app: State, user_id: str | None, who: str) -> Reprocessed | JSONResponse:
    """What the service decides (``Images.reprocessing``): up to ``GRAYWAVE_API_INLINE_REPROCESS_MAX``
    handled images now, in a processing slot (200), counted against ``who``'s requests in flight;
    more in a background job (202 with the job, ``Location: /jobs/{id}``), one at a time per user
    (or for everyone's images): 429 while one is queued or running."""
    decided = await run_in_threadpool(app.graywave.images.reprocessing, user_id)
    if isinstance(decided, ReprocessLater):
        job = Job.of(await run_in_threadpool(app.jobs.start_reprocess, decided.user_id, decided.count))
        return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": job.links.self})
    return Reprocessed.of(await processing(app, who, decided.run))


async def _delete(app: State, user_id: str | None) -> Count:
    images = app.graywave.images

    def delete() -> int:
        entries = images.entries(app.settings.today(), user_id)
        images.delete(entries)
        return len(entries)

    return Count(count=await writing(app, delete))


# --- all images (admin) ----------------------------------------------------------------------------


@router.get("/images", response_model=ImagePage, summary="Every image")
def list_all(_: Admin, app: AppState, limit: Limit = 100, offset: Offset = 0) -> ImagePage:
    return _page(app, None, limit, offset, "/images")


@router.put(
    "/images",
    response_model=Reprocessed,
    responses=REPROCESSING,
    summary="Reprocess every handled image from its original (a background job past a few images)",
)
async def reprocess_all(principal: Admin, app: AppState) -> Reprocessed | JSONResponse:
    return await _reprocess(app, None, user_key(principal))


@router.delete("/images", response_model=Count, summary="Delete every image")
async def delete_all(_: Admin, app: AppState) -> Count:
    return await _delete(app, None)


# --- one user's images -----------------------------------------------------------------------------


@router.get("/images/{user_id}", response_model=ImagePage, summary="A user's images, oldest first")
def list_user(user_id: Owner, app: AppState, limit: Limit = 100, offset: Offset = 0) -> ImagePage:
    return _page(app, user_id, limit, offset, f"/images/{user_id}")


@router.put(
    "/images/{user_id}",
    response_model=Reprocessed,
    responses=REPROCESSING,
    summary="Reprocess every handled image of a user from its original (a background job past a few images)",
)
async def reprocess_user(user_id: Owner, app: AppState) -> Reprocessed | JSONResponse:
    return await _reprocess(app, user_id, user_id)


@router.delete("/images/{user_id}", response_model=Count, summary="Delete every image of a user, everywhere")
async def delete_user(user_id: Owner, app: AppState) -> Count:
    return await _delete(app, user_id)


# --- one image -------------------------------------------------------------------------------------


@router.get(
    "/images/{user_id}/{image_id}",
    response_model=Image,
    summary="One image: status, histogram, sizes, times and a link to the processed image",
)
def get_image(user_id: Owner, image_id: str, app: AppState) -> Image:
    return Image.of(app.graywave.images.get(app.settings.today(), user_id, image_id))


@router.put(
    "/images/{user_id}/{image_id}",
    response_model=Image,
    responses={413: {"model": Error}, 415: {"model": Error}, 429: {"model": Error}, 503: {"model": Error}},
    summary="Replace an image's content and reprocess it now",
)
async def replace_image(user_id: Owner, image_id: str, file: UploadField, app: AppState) -> Image:
    images = app.graywave.images
    entry = await run_in_threadpool(images.get, app.settings.today(), user_id, image_id)
    data = await read_upload(file, app)
    content_type = file.content_type or "application/octet-stream"
    await processing(app, user_id, lambda: images.replace_and_reprocess(entry, data, content_type))
    return Image.of(await run_in_threadpool(images.get, app.settings.today(), user_id, image_id))


@router.delete("/images/{user_id}/{image_id}", status_code=204, summary="Delete an image everywhere")
async def delete_image(user_id: Owner, image_id: str, app: AppState) -> Response:
    images = app.graywave.images

    def delete() -> None:
        images.delete([images.get(app.settings.today(), user_id, image_id)])

    await writing(app, delete)
    return Response(status_code=204)
