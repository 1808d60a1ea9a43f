"""Refuse a request body before reading it: no token, or more bytes than an upload may have.

FastAPI reads a multipart body (and spools it to temporary files) before any dependency runs, so
the token check of ``api.deps`` comes too late to protect the disk: anyone who can reach the API
could fill it with bodies that are refused only at the end. This ASGI middleware looks at the
headers of every request that carries a body first:

- without a valid bearer token, 401 before a byte of the body is read (``api.auth``: the caller is
  kept for the route, which does not authenticate again);
- with a ``Content-Length`` over ``GRAYWAVE_MAX_UPLOAD_BYTES`` (plus room for the multipart
  envelope), 413 at once;
- a chunked body is counted as it arrives and cut off at the same limit, with a 413.

The routes' own checks (``api.deps``) stay: they decide who may touch which user's data.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graywave.api.auth import principal_of
from graywave.api.errors import ApiError, error_response

ENVELOPE_BYTES = 64 * 1024
"""Room for the multipart boundaries and part headers around the file itself."""

BODY_METHODS = {"POST", "PUT", "PATCH"}


class EarlyRefusal:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.graywave
        limit = state.settings.max_upload_bytes + ENVELOPE_BYTES
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:  # the first of a repeated header, as Starlette reads it
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        try:
            await principal_of(scope, state)
        except ApiError as error:
            extra = dict(error.headers) if error.headers else None
            await error_response(error.status_code, error.code, str(error.detail), extra)(scope, receive, send)
            return
        refusal = _refusal(headers, limit)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        counted = _Counted(receive, limit)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if counted.over and not started:  # the app's answer to a cut body: the 413 replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except Exception:
            if not counted.over:
                raise
        if counted.over and not started:
            await _too_large(limit)(scope, receive, send)


def _refusal(headers: dict[str, str], limit: int) -> Any:
    """The response that refuses this authenticated request from its headers alone, if any."""
    length = headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        return error_response(400, "bad_request", "the Content-Length header is not a number")
    if length is not None and int(length) > limit:
        return _too_large(limit)
    return None


def _too_large(limit: int) -> Any:
    return error_response(413, "too_large", f"request bodies are limited to {limit} bytes")


class _Counted:
    """The body as it arrives, ended (as a disconnect) once more than ``limit`` bytes came."""

    def __init__(self, receive: Receive, limit: int):
        self.receive, self.limit, self.seen, self.over = receive, limit, 0, False

    async def __call__(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.over = True
                return {"type": "http.disconnect"}
        return message
