"""Slow clients are cut off: a request's headers and its body each have a deadline.

uvicorn (0.54) has no read timeout of its own: ``timeout_keep_alive`` covers the idle time between
two requests only, and every byte that arrives stops it, so a client that sends one byte a second
holds its connection (and, once its headers are in, a task reading its body) for as long as it
likes. ASGI middleware cannot see a request before its headers are complete. Hence two parts:

- ``SlowClientCutoff``, uvicorn's h11 protocol with a **header deadline**: the request line and
  headers must arrive within ``GRAYWAVE_API_HEADER_TIMEOUT_S`` of the connection's opening (its first
  request) or of a later request's first byte. Past it the client gets ``408`` and the connection is
  closed. The same deadline bounds the rest of a body that the app answered without reading
  (a 401 or 413 before the body): uvicorn would read and drop it for as long as it trickles in.
  ``graywave api`` serves with it (``uvicorn.run(..., http=SlowClientCutoff)``).
- ``BodyTimeout``, ASGI middleware with a **body deadline**: a body may take
  ``GRAYWAVE_API_BODY_TIMEOUT_S``, plus its bytes so far at ``GRAYWAVE_API_BODY_MIN_RATE`` bytes a
  second (a large photo on a slow link is given the time its size needs; one byte a second is not).
  Past it the app is told the client left (nothing is stored: the route never runs, or sees an
  incomplete form) and the client gets ``408`` with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from graywave.api.errors import error_response, logger
from graywave.config import Settings

TIMEOUT_CODE = "request_timeout"


def _settings_of(app: Any) -> Settings | None:
    """The graywave settings of the app that uvicorn serves, through its middleware (``.app``)."""
    for _ in range(16):
        state = getattr(getattr(app, "state", None), "graywave", None)
        if state is not None:
            settings: Settings = state.settings
            return settings
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _timeout_response(message: str) -> bytes:
    body = json.dumps({"error": {"code": TIMEOUT_CODE, "message": message, "status": 408}}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class SlowClientCutoff(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on each request's line and headers (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings_of(self.app)
        default = Settings.model_fields["api_header_timeout_s"].default
        self.header_timeout_s: float = default if settings is None else settings.api_header_timeout_s
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._cut_off)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing is a request whose headers never come

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and not self._unread_body():
            self._disarm()  # the headers are in (the body has its own deadline, BodyTimeout's)

    def _unread_body(self) -> bool:
        """A body still arriving after its request was answered: read and dropped, under the deadline."""
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._unread_body():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _cut_off(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            logger.info("a client's request headers took over %s s: 408, connection closed", self.header_timeout_s)
            self.transport.write(
                _timeout_response(f"the request's headers did not arrive within {self.header_timeout_s:g} s")
            )
        self.transport.close()


class _Timed:
    """The body as it arrives, ended (as a disconnect) once it is slower than its deadline."""

    def __init__(self, receive: Receive, grace_s: float, min_rate: int):
        self.receive, self.grace_s, self.min_rate = receive, grace_s, min_rate
        self.began = anyio.current_time()
        self.seen, self.complete, self.expired = 0, False, False

    async def __call__(self) -> Message:
        if self.expired:
            return {"type": "http.disconnect"}
        if self.complete:  # after the body: a wait for the client leaving, no deadline
            return await self.receive()
        left = self.began + self.grace_s + self.seen / self.min_rate - anyio.current_time()
        with anyio.move_on_after(left):
            message = await self.receive()
            if message["type"] == "http.request":
                self.seen += len(message.get("body", b""))
                self.complete = not message.get("more_body", False)
            return message
        self.expired = True
        return {"type": "http.disconnect"}


class BodyTimeout:
    """ASGI middleware: the body deadline (see the module)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = scope["app"].state.graywave.settings
        timed = _Timed(receive, settings.api_body_timeout_s, settings.api_body_min_rate)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if timed.expired and not started:  # the app's answer to a body cut off: the 408 replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed, sending)
        except Exception:
            if not timed.expired:
                raise
        if timed.expired and not started:
            logger.info("a client's request body was slower than its deadline (%s bytes): 408", timed.seen)
            message = (
                f"the request's body did not arrive in time: {settings.api_body_timeout_s:g} s, plus"
                f" {settings.api_body_min_rate} bytes a second"
            )
            await error_response(408, TIMEOUT_CODE, message, {"Connection": "close"})(scope, receive, send)
