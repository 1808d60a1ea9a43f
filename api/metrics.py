"""Prometheus metrics of the API: ``GET /metrics`` in the Prometheus text format.

A pure ASGI middleware (``RequestMetrics``) counts every request, around everything else the app
does (the early refusals of ``api.limits`` included), by its route's *template*
(``/images/{user_id}``, never the raw path: the label set stays bounded however many users and
images there are; a path that no route matches is ``unmatched``) and its status. The template is
known only once Starlette has routed the request (``scope["route"]``); a request refused before
routing (no token, a body too large) is matched against the routes here.

One process, one registry: each ``graywave api`` process is a scrape target of its own. Under
``graywave api --workers N`` the command gives the workers a fresh private folder in
``PROMETHEUS_MULTIPROC_DIR``, and prometheus-client's multiprocess mode sums what every worker
wrote there, whichever worker answers the scrape (gauges: ``livesum``, the live workers' sum).
uvicorn has no worker-exit hook: a scrape forgets the gauges of the workers that are gone
(``multiprocess.mark_process_dead``); their counters stay, as totals should.

Who may scrape is ``GRAYWAVE_METRICS``: ``token`` (an admin bearer token, the default),
``public``, or ``off`` (no route: 404).
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graywave.api.deps import State, admin
from graywave.config import METRICS_MULTIPROCESS_VARIABLE

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
"""The route label of a path that no route matches (any path: one label, not one per path)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods labelled as themselves; any other (a client may send any token) is ``other``."""
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFUSAL_STATUSES = frozenset({429, 503})
"""Refusals counted by reason: the ``code`` of the JSON error (``busy``, ``unavailable``...)."""
REFUSAL_BODY_LIMIT = 64 * 1024
"""The most of a refusal's body read for its code (the API's JSON errors are a few hundred bytes)."""
UNKNOWN_REASON = "unknown"
UPLOAD_ROUTE = ("POST", "/images/{user_id}")
UPLOAD_STORED_STATUSES = frozenset({200, 202})
"""An upload through the API is stored once this route answers 200 (processed) or 202 (pending)."""
REPLAYED_HEADER = b"idempotent-replayed"
"""An idempotent retry's answer carries it: the first request's upload, not a new one."""


class Metrics:
    """The API's metrics, and the registry that a scrape reads (one per app)."""

    def __init__(self, busy: Callable[[], float], slots: int, multiprocess_dir: str | None) -> None:
        self.busy = busy
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        # Multiprocess mode: every worker writes its own files; the scrape's registry reads them all.
        into = None if multiprocess_dir else self.registry
        if multiprocess_dir:
            multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "graywave_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=into,
        )
        self.latency = Histogram(
            "graywave_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=into,
        )
        self.in_flight = Gauge(
            "graywave_http_requests_in_flight",
            "Requests being answered now.",
            registry=into,
            multiprocess_mode="livesum",
        )
        self.refusals = Counter(
            "graywave_http_refusals",
            "429 and 503 answers, by status and reason (the code of the JSON error).",
            ["status", "reason"],
            registry=into,
        )
        self.uploads_stored = Counter(
            "graywave_uploads_stored", "Uploads stored through the API (POST /images/{user_id}).", registry=into
        )
        self.slots_busy = Gauge(
            "graywave_processing_slots_busy",
            "Processing slots in use (GRAYWAVE_API_PROCESSING_SLOTS), as of the last request or scrape.",
            registry=into,
            multiprocess_mode="livesum",
        )
        self.slots = Gauge(
            "graywave_processing_slots",
            "Processing slots (GRAYWAVE_API_PROCESSING_SLOTS).",
            registry=into,
            multiprocess_mode="livesum",
        )
        self.slots.set(slots)

    def sample_slots(self) -> None:
        self.slots_busy.set(self.busy())

    def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition, in the format the scraper asked for (``Accept``), and its content type."""
        self.sample_slots()
        if self.multiprocess_dir:
            forget_dead_workers(self.multiprocess_dir)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def answered(self, scope: Scope, status: int, seconds: float, refusal: bytes | None, replayed: bool) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = route_template(scope)
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if refusal is not None:
            self.refusals.labels(str(status), refusal_reason(refusal)).inc()
        if (method, route) == UPLOAD_ROUTE and status in UPLOAD_STORED_STATUSES and not replayed:
            self.uploads_stored.inc()


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (Starlette puts it in ``scope["route"]``); for a
    request answered before routing (``api.limits``' refusals), the documented route that would
    have; ``UNMATCHED`` when none matches."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    return documented_template(scope) or UNMATCHED


def documented_template(scope: Scope) -> str | None:
    """The OpenAPI document's template of this method and path (where templates overlap, the one
    with the most literal segments, as the router's order has it), or None."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and (path == root or path.startswith(f"{root}/")):
        path = path[len(root) :] or "/"
    method = scope["method"].lower()
    found: list[tuple[int, str]] = []
    for template, operations in scope["app"].openapi()["paths"].items():
        if method in operations and re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), path):
            found.append((sum(1 for part in template.split("/") if part and not part.startswith("{")), template))
    return max(found)[1] if found else None


def refusal_reason(body: bytes) -> str:
    """The ``code`` of a JSON error ``{"error": {"code": ...}}``; ``UNKNOWN_REASON`` for another body."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return UNKNOWN_REASON
    return code if isinstance(code, str) else UNKNOWN_REASON


def forget_dead_workers(path: str) -> None:
    """Drop the live gauges of the workers that are gone (a worker killed or restarted by uvicorn)."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(file).removesuffix(".db").rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process of that pid
        return True
    return True


class RequestMetrics:
    """Pure ASGI middleware: counts and times every HTTP request (``Metrics.answered``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        status = 500  # an error that escaped the app: the server's 500 answers it
        refusal: bytearray | None = None
        replayed = False

        async def sending(message: Message) -> None:
            nonlocal status, refusal, replayed
            if message["type"] == "http.response.start":
                status = message["status"]
                refusal = bytearray() if status in REFUSAL_STATUSES else None
                replayed = any(name.lower() == REPLAYED_HEADER for name, _ in message.get("headers", ()))
            elif message["type"] == "http.response.body" and refusal is not None:
                refusal += message.get("body", b"")[: REFUSAL_BODY_LIMIT - len(refusal)]
            await send(message)

        metrics.in_flight.inc()
        metrics.sample_slots()
        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.in_flight.dec()
            metrics.sample_slots()
            body = bytes(refusal) if refusal is not None else None
            metrics.answered(scope, status, time.perf_counter() - started, body, replayed)


def install(app: FastAPI, state: State) -> Metrics:
    """Count the app's requests (the outermost of its own middlewares: install it after the others)
    and serve ``GET /metrics`` as ``GRAYWAVE_METRICS`` says."""
    limiter = state.processing.limiter
    metrics = Metrics(
        lambda: limiter.borrowed_tokens, state.processing.slots, os.environ.get(METRICS_MULTIPROCESS_VARIABLE)
    )
    app.state.metrics = metrics
    app.add_middleware(RequestMetrics, metrics=metrics)
    if state.settings.metrics == "off":
        return metrics
    guard: list[Any] = [Depends(admin)] if state.settings.metrics == "token" else []

    @app.get(METRICS_PATH, include_in_schema=False, dependencies=guard)
    def scrape(request: Request) -> Response:  # a thread of the pool: multiprocess mode reads files
        body, content_type = metrics.scrape(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return metrics
