"""The graywave REST API.

    graywave api --host 127.0.0.1 --port 8000          # docs at http://127.0.0.1:8000/docs
    curl -H "Authorization: Bearer $TOKEN" -F file=@IMG_0001.jpg http://127.0.0.1:8000/images/alice

Routes follow the design document's resource table; see the README for what each method means.
"""


from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from graywave import __version__
from graywave.api import actions
from graywave.api.auth import Principal, TokenStore
from graywave.api.catalog import ImageCatalog
from graywave.api.models import Count, Error, Image, ImagePage, Median, PresignedUpload, Similar, UploadUrlRequest, Weekly
from graywave.backends import Backends
from graywave.config import Settings
from graywave.flows.daily import (
    DailyHistograms,
    NoData,
    daily_histograms,
    iso_week,
    median_row,
    similar_to,
    weekly_histograms,
)
from graywave.kernels.codecs import Rejected, RejectReason
from graywave.kernels.similarity import DEFAULT_METRIC, METRICS
from graywave.storage.layout import USER_ID_PATTERN, image_id_for
from graywave.storage.s3 import S3BlobStore
from graywave.storage.uploads import presign_upload

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid",
}
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Error} for code in (400, 401, 403, 404, 409, 422)}
PROCESSED_URL_EXPIRY_S = 300


class ApiError(HTTPException):
    def __init__(self, status_code: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status_code, message, headers)
        self.code = code or _CODES.get(status_code, "error")


def _error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "status": status_code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    backends = Backends.open(settings)
    tokens = TokenStore(settings.api_tokens_file)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        yield
        backends.close()

    app = FastAPI(
        title="graywave",
        version=__version__,
        lifespan=lifespan,
        description=(
            "Uploads, image status, processed grayscale images and the daily analytics of graywave.\n\n"
            "Every route needs `Authorization: Bearer <token>` (issue one with `graywave token issue USER`): "
            "a user token reads and writes its own user's images and results, an admin token everything. "
            "Errors are JSON: `{\"error\": {\"code\", \"message\", \"status\"}}`."
        ),
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = getattr(error, "code", None) or _CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 405:
            message = "this method is not allowed on this resource"
        return _error_response(error.status_code, code, message, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error_response(422, "invalid", f"{where}: {first.get('msg', 'invalid value')}")

    bearer = HTTPBearer(auto_error=False)

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(401, "a bearer token is required", headers=challenge)
        principal = tokens.authenticate(credentials.credentials)
        if principal is None:
            raise ApiError(401, "the bearer token is not valid", headers=challenge)
        return principal

    Caller = Annotated[Principal, Depends(caller)]

    def admin(principal: Caller) -> Principal:
        if not principal.admin:
            raise ApiError(403, "this route needs an admin token")
        return principal

    def owner(user_id: str, principal: Caller) -> str:
        if not USER_ID_PATTERN.match(user_id):
            raise ApiError(400, f"user id {user_id!r} does not match [A-Za-z0-9_-]{{1,64}}", "invalid_id")
        if not principal.may_access(user_id):
            raise ApiError(403, f"this token may not access the data of {user_id!r}")
        return user_id

    Admin = Annotated[Principal, Depends(admin)]
    Owner = Annotated[str, Depends(owner)]

    catalog = ImageCatalog(backends)

    def view(doc: dict[str, Any]) -> Image:
        base = f"/images/{doc['user_id']}/{doc['_id']}"
        return Image(
            image_id=doc["_id"],
            uploaded_at=doc.get("timestamp"),
            links={"self": base, "processed": f"{base}/processed" if doc["status"] == "processed" else None},
            **{key: value for key, value in doc.items() if key in Image.model_fields and key not in ("links",)},
        )

    def page(user_id: str | None, limit: int, offset: int, path: str) -> ImagePage:
        docs, total = catalog.page(settings.today(), user_id, offset, limit)
        following = f"{path}?limit={limit}&offset={offset + limit}" if offset + limit < total else None
        return ImagePage(items=[view(d) for d in docs], total=total, limit=limit, offset=offset, next=following)

    def one(user_id: str, image_id: str) -> dict[str, Any]:
        doc = catalog.get(settings.today(), user_id, image_id)
        if doc is None:
            raise ApiError(404, f"image {image_id} of {user_id} does not exist")
        return doc

    def guarded(action: Callable[[], Any]) -> Any:
        try:
            return action()
        except actions.Busy as busy:
            raise ApiError(409, f"a wave is running, try again later ({busy})") from None

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, f"uploads are limited to {settings.max_upload_bytes} bytes")
        return data

    def rejected_upload(error: Rejected) -> ApiError:
        if error.reason == RejectReason.TOO_MANY_PIXELS:
            return ApiError(413, error.detail)
        if error.reason == RejectReason.EMPTY:
            return ApiError(400, "the uploaded file is empty", "empty")
        return ApiError(415, f"not an accepted image ({error.reason}): {error.detail}")

    Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
    Offset = Annotated[int, Query(ge=0, description="Items to skip.")]
    Day = Annotated[date | None, Query(alias="date", description="Day (default: today in GRAYWAVE_TIMEZONE).")]
    MetricQuery = Annotated[str, Query(description=f"One of {', '.join(METRICS)}.", pattern="^(" + "|".join(METRICS) + ")$")]
    UploadField = Annotated[UploadFile, File(description="The photo (JPEG, HEIC/HEIF, PNG, WebP, AVIF).")]

    # --- analytics (registered first: their aliases share the /images prefix) -------------------------

    def weekly(user_id: str, week: str | None) -> Weekly:
        try:
            monday, sunday = iso_week(week, settings.today())
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        frame = weekly_histograms(backends.lake, user_id, monday, sunday)
        year, number, _ = monday.isocalendar()
        return Weekly(
            user_id=user_id, week=f"{year}-W{number:02d}", monday=monday.isoformat(), sunday=sunday.isoformat(),
            images=frame.to_dicts(),
        )

    daily_cache: dict[date, tuple[tuple[str, ...], DailyHistograms]] = {}

    def daily(day: date) -> DailyHistograms:
        """The day's user histograms, computed again only when the day's lake files change."""
        files = tuple(backends.lake.files("images", [day]))
        cached = daily_cache.get(day)
        if cached is None or cached[0] != files:
            cached = daily_cache[day] = (files, daily_histograms(backends.lake, day))
        return cached[1]

    def median(day: date | None) -> Median:
        when = day or settings.today()
        try:
            row = median_row(daily(when))
        except NoData as error:
            raise ApiError(404, str(error)) from None
        return Median(date=when.isoformat(), **row)

    def similar(user_id: str, n: int, day: date | None, metric: str) -> Similar:
        when = day or settings.today()
        try:
            frame = similar_to(daily(when), user_id, n, metric)
        except NoData as error:
            raise ApiError(404, str(error)) from None
        neighbours = [{"rank": r["rank"], "user_id": r["neighbour_id"], "distance": r["distance"]} for r in frame.to_dicts()]
        return Similar(user_id=user_id, date=when.isoformat(), metric=metric, neighbours=neighbours)

    @app.get("/users/{user_id}/weekly", response_model=Weekly, responses=ERRORS, tags=["analytics"],
             summary="Every image histogram of a user in an ISO week")
    @app.get("/images/weekly/{user_id}", response_model=Weekly, responses=ERRORS, tags=["analytics"],
             summary="Alias of /users/{user_id}/weekly (the design document's route)")
    def get_weekly(user_id: Owner, week: Annotated[str | None, Query(description="ISO week, e.g. 2026-W48.")] = None) -> Weekly:
        return weekly(user_id, week)

    @app.get("/analytics/median", response_model=Median, responses=ERRORS, tags=["analytics"],
             summary="The median histogram of a day across all users")
    @app.get("/images/day/median", response_model=Median, responses=ERRORS, tags=["analytics"],
             summary="Alias of /analytics/median (the design document's route)")
    def get_median(_: Caller, day: Day = None) -> Median:
        return median(day)

    @app.get("/users/{user_id}/similar", response_model=Similar, responses=ERRORS, tags=["analytics"],
             summary="The n users with the most similar histograms of a day")
    def get_similar(user_id: Owner, n: Annotated[int, Query(ge=1, le=1000)] = 5, day: Day = None,
                    metric: MetricQuery = DEFAULT_METRIC) -> Similar:
        return similar(user_id, n, day, metric)

    @app.get("/images/similarity/{user_id}/{n}", response_model=Similar, responses=ERRORS, tags=["analytics"],
             summary="Alias of /users/{user_id}/similar (the design document's route)")
    def get_similar_alias(user_id: Owner, n: int, day: Day = None, metric: MetricQuery = DEFAULT_METRIC) -> Similar:
        if not 1 <= n <= 1000:
            raise ApiError(400, "n must be between 1 and 1000")
        return similar(user_id, n, day, metric)

    # --- all images (admin) ----------------------------------------------------------------------------

    @app.get("/images", response_model=ImagePage, responses=ERRORS, tags=["images"], summary="Every image")
    def list_all(_: Admin, limit: Limit = 100, offset: Offset = 0) -> ImagePage:
        return page(None, limit, offset, "/images")

    @app.put("/images", response_model=Count, responses=ERRORS, tags=["images"],
             summary="Reprocess every handled image from its original")
    def reprocess_all(_: Admin) -> Count:
        keys = [d["source_key"] for d in catalog.documents(settings.today()) if d["status"] != "pending"]
        guarded(lambda: actions.process_now(backends, settings, keys))
        return Count(count=len(keys))

    @app.delete("/images", response_model=Count, responses=ERRORS, tags=["images"], summary="Delete every image")
    def delete_all(_: Admin) -> Count:
        docs = catalog.documents(settings.today())
        guarded(lambda: actions.delete_images(backends, settings, docs))
        return Count(count=len(docs))

    # --- one user's images -----------------------------------------------------------------------------

    @app.get("/images/{user_id}", response_model=ImagePage, responses=ERRORS, tags=["images"],
             summary="A user's images, oldest first")
    def list_user(user_id: Owner, limit: Limit = 100, offset: Offset = 0) -> ImagePage:
        return page(user_id, limit, offset, f"/images/{user_id}")

    @app.post("/images/{user_id}", response_model=Image, status_code=status.HTTP_202_ACCEPTED, tags=["images"],
              responses={**ERRORS, 200: {"model": Image, "description": "Processed now (wait=true)"}, 413: {"model": Error}, 415: {"model": Error}},
              summary="Upload a photo: stored as pending for the next wave, or processed now with wait=true")
    async def upload(user_id: Owner, file: UploadField,
                     wait: Annotated[bool, Query(description="Process it now and return the result.")] = False) -> Any:
        data = await read_upload(file)
        try:
            key = actions.store_upload(backends, settings, user_id, data, file.content_type or "application/octet-stream")
        except Rejected as error:
            raise rejected_upload(error) from None
        if wait:
            guarded(lambda: actions.process_now(backends, settings, [key]))
            return JSONResponse(view(one(user_id, image_id_for(key))).model_dump(mode="json"), status_code=200)
        return view(one(user_id, image_id_for(key)))

    @app.put("/images/{user_id}", response_model=Count, responses=ERRORS, tags=["images"],
             summary="Reprocess every handled image of a user from its original")
    def reprocess_user(user_id: Owner) -> Count:
        keys = [d["source_key"] for d in catalog.documents(settings.today(), user_id) if d["status"] != "pending"]
        guarded(lambda: actions.process_now(backends, settings, keys))
        return Count(count=len(keys))

    @app.delete("/images/{user_id}", response_model=Count, responses=ERRORS, tags=["images"],
                summary="Delete every image of a user, everywhere")
    def delete_user(user_id: Owner) -> Count:
        docs = catalog.documents(settings.today(), user_id)
        guarded(lambda: actions.delete_images(backends, settings, docs))
        return Count(count=len(docs))

    @app.post("/images/{user_id}/upload-url", response_model=PresignedUpload, responses=ERRORS, tags=["images"],
              summary="A presigned S3 POST for one direct upload from the phone (S3 blob stores only)")
    def upload_url(user_id: Owner, request: UploadUrlRequest) -> PresignedUpload:
        if not isinstance(backends.blobs, S3BlobStore):
            raise ApiError(400, "direct uploads need an S3 blob store (GRAYWAVE_BLOB_URL=s3://...)", "not_supported")
        try:
            post = presign_upload(backends.blobs, settings.today(), user_id, request.content_type,
                                  settings.max_upload_bytes, settings.upload_url_expiry_s)
        except ValueError as error:
            raise ApiError(415, str(error)) from None
        return PresignedUpload(url=post.url, fields=post.fields, image_id=image_id_for(post.key), key=post.key,
                               expires_at=post.expires_at)

    # --- one image -------------------------------------------------------------------------------------

    @app.get("/images/{user_id}/{image_id}", response_model=Image, responses=ERRORS, tags=["images"],
             summary="One image: status, histogram, sizes, times and a link to the processed image")
    def get_image(user_id: Owner, image_id: str) -> Image:
        return view(one(user_id, image_id))

    @app.put("/images/{user_id}/{image_id}", response_model=Image, tags=["images"],
             responses={**ERRORS, 413: {"model": Error}, 415: {"model": Error}},
             summary="Replace an image's content and reprocess it now")
    async def replace_image(user_id: Owner, image_id: str, file: UploadField) -> Image:
        doc = one(user_id, image_id)
        data = await read_upload(file)
        try:
            actions.replace_upload(backends, settings, doc["source_key"], data, file.content_type or "application/octet-stream")
        except Rejected as error:
            raise rejected_upload(error) from None
        guarded(lambda: actions.process_now(backends, settings, [doc["source_key"]]))
        return view(one(user_id, image_id))

    @app.delete("/images/{user_id}/{image_id}", status_code=204, responses=ERRORS, tags=["images"],
                summary="Delete an image everywhere")
    def delete_image(user_id: Owner, image_id: str) -> Response:
        doc = one(user_id, image_id)
        guarded(lambda: actions.delete_images(backends, settings, [doc]))
        return Response(status_code=204)

    @app.get("/images/{user_id}/{image_id}/processed", tags=["images"],
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "The grayscale JPEG"},
                        307: {"description": "A short-lived presigned S3 URL of the grayscale JPEG"}},
             summary="The processed grayscale image")
    def processed(user_id: Owner, image_id: str) -> Response:
        doc = one(user_id, image_id)
        if doc["status"] != "processed":
            raise ApiError(404, f"image {image_id} is {doc['status']}: it has no processed image")
        if isinstance(backends.blobs, S3BlobStore):
            return RedirectResponse(backends.blobs.presigned_get(doc["processed_key"], PROCESSED_URL_EXPIRY_S), 307)
        return Response(backends.blobs.read(doc["processed_key"]), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300"})

    return app
