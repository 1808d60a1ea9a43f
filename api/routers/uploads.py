"""Uploads (through the API, or straight to S3 with a presigned POST) and the processed images."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response

from graywave.api.deps import AppState, Owner, UploadField, processing, read_upload
from graywave.api.errors import ERRORS, ApiError
from graywave.api.models import Error, Image, PresignedUpload, UploadUrlRequest
from graywave.records import image_id_for
from graywave.service.images import UploadedNow, presigned_upload, processed_image, store_upload, upload_now

router = APIRouter(tags=["images"], responses=ERRORS)


@router.post(
    "/images/{user_id}",
    response_model=Image,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": Image, "description": "Processed now (wait=true)"},
        202: {
            "model": Image,
            "description": "Stored as pending (without wait, or while the lake or the device is unavailable)",
        },
        429: {"model": Error, "description": "The user's expensive requests in flight are at their limit (wait=true)"},
        503: {"model": Error, "description": "Every processing slot is taken (wait=true): retry after Retry-After"},
        413: {"model": Error},
        415: {"model": Error},
    },
    summary="Upload a photo: stored as pending for the next wave, or processed now with wait=true",
)
async def upload(
    user_id: Owner,
    file: UploadField,
    app: AppState,
    wait: Annotated[bool, Query(description="Process it now and return the result.")] = False,
) -> Any:
    data = await read_upload(file, app)
    content_type = file.content_type or "application/octet-stream"
    if wait:
        uploaded = await processing(
            app, user_id, lambda: upload_now(app.backends, app.settings, user_id, data, content_type, file.filename)
        )
    else:  # the header check only, but still not on the event loop
        key = await run_in_threadpool(
            store_upload, app.backends, app.settings, user_id, data, content_type, file.filename
        )
        uploaded = UploadedNow(key, "sent without wait=true: the next wave processes it")
    entry = await run_in_threadpool(app.catalog.get, app.settings.today(), user_id, image_id_for(uploaded.key))
    image = Image.of(entry)
    if uploaded.processed:
        return JSONResponse(image.model_dump(mode="json"), status_code=200)
    # 202: pending; with wait=true too when it could not be processed now, saying why
    return image.model_copy(update={"pending": uploaded.pending})


@router.post(
    "/images/{user_id}/upload-url",
    response_model=PresignedUpload,
    responses={415: {"model": Error}},
    summary="A presigned S3 POST for one direct upload from the phone (S3 blob stores only)",
)
def upload_url(user_id: Owner, request: UploadUrlRequest, app: AppState) -> PresignedUpload:
    if not app.backends.blobs.remote:
        raise ApiError(400, "direct uploads need an S3 blob store (GRAYWAVE_BLOB_URL=s3://...)", "not_supported")
    post = presigned_upload(app.backends, app.settings, user_id, request.content_type)
    return PresignedUpload(
        url=post.url, fields=post.fields, image_id=image_id_for(post.key), key=post.key, expires_at=post.expires_at
    )


@router.get(
    "/images/{user_id}/{image_id}/processed",
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The grayscale JPEG"},
        307: {"description": "A short-lived presigned S3 URL of the grayscale JPEG"},
    },
    summary="The processed grayscale image",
)
def processed(user_id: Owner, image_id: str, app: AppState) -> Response:
    found = processed_image(app.backends, app.catalog.get(app.settings.today(), user_id, image_id))
    if found.url is not None:
        return RedirectResponse(found.url, 307)
    return Response(found.data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
