"""Every error the API answers has one JSON shape, ``{"error": {"code", "message", "status"}}``.

graywave's own errors (``graywave.errors``) are mapped here, once, by exception handlers; routes
raise and never catch. ``ApiError`` is for what only HTTP knows (tokens, access, page bounds).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

from deltalake.exceptions import DeltaError
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from graywave.api.models import Error
from graywave.errors import (
    BackendUnavailable,
    GraywaveError,
    InvalidInput,
    NotFound,
    Rejected,
    RejectReason,
    UnsupportedMediaType,
)
from graywave.service.jobs import JobInProgress, JobsUnavailable
from graywave.service.terms import refusal
from graywave.service.tokens import TokenStoreUnavailable

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "unavailable",
}
logger = logging.getLogger("graywave.api")
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Error} for code in (400, 401, 403, 404, 422)}
"""The error responses every route documents."""


class ApiError(HTTPException):
    def __init__(self, status_code: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status_code, message, headers)
        self.code = code or CODES.get(status_code, "error")


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "status": status_code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


REJECTED_MESSAGES = {
    RejectReason.NOT_AN_IMAGE: "the file is not an image",
    RejectReason.UNSUPPORTED_FORMAT: "the image format is not one of JPEG, HEIC/HEIF, PNG, WebP, AVIF",
    RejectReason.TRUNCATED: "the image is truncated",
    RejectReason.CORRUPT: "the image data is corrupt",
}
"""What a client is told of an image it sent; the decoder's own words go to the log only."""
STORAGE_UNAVAILABLE = "a storage backend is unavailable; try again later"
"""What a client is told of a store that cannot be reached or written (the log names it and says why)."""
TOKEN_STORE_UNAVAILABLE = "the API's token store is unavailable; try again later"
"""What a client is told of a token file that cannot be read (the log has its path and why)."""


UNEXPECTED = "an unexpected error; it is logged on the server"
"""What a client is told of a bug (a 500); the log has the traceback."""

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _answer(status_code: int, message: str | None = None) -> Handler:
    """The handler that answers an error with ``status_code`` and the error's own message, or with
    ``message`` where the error's words are for the log only. A 5xx is logged with its traceback."""

    async def handler(request: Request, error: Exception) -> Response:
        if status_code >= 500:
            logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(status_code, CODES.get(status_code, "error"), message or str(error))

    return handler


async def _rejected(_: Request, error: Exception) -> Response:
    """An upload refused at the door: too big (413), empty (400), or not an accepted image (415)."""
    error = cast(Rejected, error)  # registered for Rejected (and its subclasses) only
    if error.reason in (RejectReason.TOO_MANY_PIXELS, RejectReason.OVER_DECODE_BUDGET):
        return error_response(413, CODES[413], error.detail)
    if error.reason == RejectReason.EMPTY:
        return error_response(400, "empty", "the uploaded file is empty")
    logger.info("upload refused (%s): %s", error.reason, error.detail)
    message = REJECTED_MESSAGES.get(error.reason, "the file cannot be processed")
    return error_response(415, CODES[415], f"not an accepted image ({error.reason}): {message}")


async def _jobs_unavailable(_: Request, error: Exception) -> Response:
    """No background job can start: its message says why and what to start (no address in it)."""
    return error_response(503, "jobs_unavailable", str(error))


async def _job_in_progress(_: Request, error: Exception) -> Response:
    """A job of the same scope is queued or running: 429, with when to ask again."""
    retry_after_s = cast(JobInProgress, error).retry_after_s  # registered for JobInProgress only
    return error_response(429, "too_many_requests", str(error), headers={"Retry-After": str(retry_after_s)})


HANDLERS: dict[type[GraywaveError], Handler] = {
    Rejected: _rejected,
    UnsupportedMediaType: _answer(415),
    InvalidInput: _answer(400),
    NotFound: _answer(404),
    TokenStoreUnavailable: _answer(503, TOKEN_STORE_UNAVAILABLE),  # its message names the file's path
    BackendUnavailable: _answer(503, STORAGE_UNAVAILABLE),  # its message names buckets, paths, URLs
    JobsUnavailable: _jobs_unavailable,
    JobInProgress: _job_in_progress,
    GraywaveError: _answer(500, UNEXPECTED),  # any other kind reaching a route is a bug
}
"""One handler per kind of graywave's errors. Starlette answers an error with the handler of the
nearest class in its MRO, so a subclass (``TokenStoreUnavailable`` of ``BackendUnavailable``) gets
its own and any kind without one gets its base's: the order of this table does not matter."""


def _route_path(request: Request) -> str:
    """The path as the routes know it. Behind a proxy prefix (uvicorn's ``--root-path``) the
    request's path starts with that prefix, which no documented path carries."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and (path == root or path.startswith(f"{root}/")):
        return path[len(root) :] or "/"
    return path


def _allowed_methods(request: Request) -> list[str]:
    """The methods the API documents at the path (Starlette's 405 names only those of the first
    route whose path matched, and FastAPI makes one route per method). Where templates overlap
    (``/images/day/median`` and ``/images/{user_id}/{image_id}``), the one with the most literal
    segments is the path's."""
    path = _route_path(request)
    matches: list[tuple[int, set[str]]] = []
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), path):
            literals = sum(1 for part in template.split("/") if part and not part.startswith("{"))
            matches.append((literals, {method.upper() for method in operations}))
    best = max((literals for literals, _ in matches), default=0)
    return sorted({m for literals, methods in matches if literals == best for m in methods})


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape."""

    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = getattr(error, "code", None) or CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            message = "this method is not allowed on this resource"
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(error.status_code, code, message, headers)

    async def refused_write(request: Request, error: Exception) -> JSONResponse:
        """A write that the lake or the blob store refused (a read-only file system, no permission, a
        full disk), in delta-rs's own errors, which are no ``GraywaveError``: 503, like an unreachable
        store. Any other error of these types is a bug, raised on to the 500 below."""
        if refusal(error) is None:
            raise error
        logger.error("%s %s failed: the storage refused a write", request.method, request.url.path, exc_info=error)
        return error_response(503, CODES[503], STORAGE_UNAVAILABLE)

    app.add_exception_handler(OSError, refused_write)
    app.add_exception_handler(DeltaError, refused_write)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        if refusal(error) is not None:  # one raised outside the routes (a middleware)
            return error_response(503, CODES[503], STORAGE_UNAVAILABLE)
        return error_response(500, "error", UNEXPECTED)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(422, "invalid", f"{where}: {first.get('msg', 'invalid value')}")
