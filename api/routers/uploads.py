"""Uploads (through the API, or straight to S3 with a presigned POST) and the processed images."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response

from graywave.api.deps import AppState, Owner, State, UploadField, processing, read_upload
from graywave.api.errors import ERRORS, ApiError
from graywave.api.models import Error, Image, PresignedUpload, UploadUrlRequest
from graywave.records import image_id_for
from graywave.service.images import UploadedNow
from graywave.service.terms import parse_upload_key
from graywave.service.tokens import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    Claim,
    KeyInFlight,
    KeyReused,
    Replay,
    Resume,
    request_fingerprint,
)

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
        409: {
            "model": Error,
            "description": "A request with this Idempotency-Key is being answered now: retry after Retry-After",
        },
        413: {"model": Error},
        415: {"model": Error},
        422: {"model": Error, "description": "Invalid parameters, or an Idempotency-Key used for another request"},
    },
    summary="Upload a photo: stored as pending for the next wave, or processed now with wait=true",
)
async def upload(
    user_id: Owner,
    file: UploadField,
    app: AppState,
    wait: Annotated[bool, Query(description="Process it now and return the result.")] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
            description="A key of the client's choosing (a UUID) that makes a retry safe: a request with the"
            " key of an earlier one of the same user, and the same file and parameters, gets the first"
            " answer again and stores nothing new (for 24 h). The same key with another request: 422;"
            " while the first is being answered: 409 with Retry-After.",
        ),
    ] = None,
) -> Any:
    data = await read_upload(file, app)
    content_type = file.content_type or "application/octet-stream"
    if idempotency_key is None:
        return await _upload(app, user_id, data, content_type, file.filename, wait)
    file_name, key = file.filename, idempotency_key
    begun = await run_in_threadpool(  # the digest of up to GRAYWAVE_MAX_UPLOAD_BYTES: off the event loop
        lambda: app.tokens.begin(user_id, key, request_fingerprint(user_id, str(wait), content_type, file_name, data))
    )
    if isinstance(begun, Replay):
        return Response(
            begun.body, begun.status, media_type="application/json", headers={"Idempotent-Replayed": "true"}
        )
    if isinstance(begun, Resume):  # the first request stored the upload, then failed: answer from it
        answer = await _answer(app, user_id, UploadedNow(begun.key, begun.pending))
        await run_in_threadpool(app.tokens.answered, begun, answer.status_code, bytes(answer.body))
        return answer
    if not isinstance(begun, Claim):
        raise _refusal(begun)
    try:
        uploaded = await _store(app, user_id, data, content_type, file_name, wait)
    except BaseException:
        with anyio.CancelScope(shield=True):  # a cancelled request too: its key must not stay claimed
            await run_in_threadpool(app.tokens.abandoned, begun)  # nothing stored: a retry runs it again
        raise
    # Stored: from now on a retry answers from this upload (Resume), even if this request fails.
    await run_in_threadpool(app.tokens.stored, begun, uploaded.key, uploaded.pending)
    answer = await _answer(app, user_id, uploaded)
    await run_in_threadpool(app.tokens.answered, begun, answer.status_code, bytes(answer.body))
    return answer


IN_FLIGHT_RETRY_AFTER_S = 1


def _refusal(begun: KeyInFlight | KeyReused) -> ApiError:
    """The answer to a request whose Idempotency-Key could not be claimed: the key's first request
    is being answered now (409), or the key was used for another request (422)."""
    if isinstance(begun, KeyInFlight):
        return ApiError(
            409,
            "a request with this Idempotency-Key is being answered now; retry in a moment",
            "in_progress",
            headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_S)},
        )
    return ApiError(
        422,
        "this Idempotency-Key was used for another request (another file or other parameters)",
        "idempotency_key_reused",
    )


async def _upload(
    app: State, user_id: str, data: bytes, content_type: str, file_name: str | None, wait: bool
) -> JSONResponse:
    return await _answer(app, user_id, await _store(app, user_id, data, content_type, file_name, wait))


async def _store(
    app: State, user_id: str, data: bytes, content_type: str, file_name: str | None, wait: bool
) -> UploadedNow:
    """Store the upload (and with ``wait``, process it now)."""
    if wait:
        images = app.graywave.images
        uploaded = await processing(app, user_id, lambda: images.upload_now(user_id, data, content_type, file_name))
    else:  # the header check only, but still not on the event loop
        key = await run_in_threadpool(app.graywave.images.store_upload, user_id, data, content_type, file_name)
        uploaded = UploadedNow(key, "sent without wait=true: the next wave processes it")
    return uploaded


async def _answer(app: State, user_id: str, uploaded: UploadedNow) -> JSONResponse:
    """The answer to a stored upload: 200 processed, 202 pending (saying why)."""
    day = parse_upload_key(uploaded.key).upload_date  # its own day: a retry after midnight finds it too
    entry = await run_in_threadpool(app.graywave.images.get, day, user_id, image_id_for(uploaded.key))
    image = Image.of(entry)
    if uploaded.processed:
        return JSONResponse(image.model_dump(mode="json"), status_code=200)
    # 202: pending; with wait=true too when it could not be processed now, saying why
    return JSONResponse(image.model_copy(update={"pending": uploaded.pending}).model_dump(mode="json"), status_code=202)


@router.post(
    "/images/{user_id}/upload-url",
    response_model=PresignedUpload,
    responses={415: {"model": Error}},
    summary="A presigned S3 POST for one direct upload from the phone (S3 blob stores only)",
)
def upload_url(user_id: Owner, request: UploadUrlRequest, app: AppState) -> PresignedUpload:
    if not app.graywave.images.direct_uploads:
        raise ApiError(400, "direct uploads need an S3 blob store (GRAYWAVE_BLOB_URL=s3://...)", "not_supported")
    post = app.graywave.images.presigned_upload(user_id, request.content_type)
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
    images = app.graywave.images
    found = images.processed_image(images.get(app.settings.today(), user_id, image_id))
    if found.url is not None:
        return RedirectResponse(found.url, 307)
    return Response(found.data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
