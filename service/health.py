"""Readiness: can this process reach its backends now? The blob store, the lake and, when
configured, MongoDB, each checked once, cheaply (a folder's existence or a HEAD of the bucket, the
lake's tables brought up to their latest commit, a MongoDB ping with a short timeout).

What went wrong is logged, with the backend's own words (paths, buckets, hosts); a check's result
says only ``ok`` or ``unavailable``, so that it can be shown to anyone who may ask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from graywave.service.backends import Backends
from graywave.storage.blobs import LocalBlobStore

logger = logging.getLogger("graywave.health")

MONGODB_PING_TIMEOUT_S = 2.0
"""How long a readiness check waits for MongoDB (server selection included)."""


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, bool]
    """Each backend checked (``blob_store``, ``lake``, ``mongodb`` when configured): reachable or not."""

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]


def _passes(name: str, check: Callable[[], object]) -> bool:
    try:
        check()
    # A probe reports what it finds, whatever the backend raised (BackendUnavailable, an OSError, a
    # driver's own error): it must never fail itself.
    except Exception as error:  # noqa: BLE001
        logger.warning("readiness: the %s is unavailable: %s: %s", name.replace("_", " "), type(error).__name__, error)
        return False
    return True


def _blob_store(backends: Backends) -> None:
    """The blob store can be used. A local folder not made yet, in a folder that exists, is ready on
    a fresh install (nothing recorded in the lake yet: the first upload makes it); once the lake
    holds records it means a volume that is not mounted, and is unavailable."""
    blobs = backends.blobs
    fresh = isinstance(blobs, LocalBlobStore) and not blobs.root.exists() and blobs.root.parent.is_dir()
    if fresh and all(version < 0 for version in backends.lake.versions()):
        return
    blobs.check()


def readiness(backends: Backends, mongodb_timeout_s: float = MONGODB_PING_TIMEOUT_S) -> Readiness:
    """Check each backend in turn; never raises."""
    checks = {
        "blob_store": _passes("blob_store", lambda: _blob_store(backends)),
        "lake": _passes("lake", backends.lake.check),
    }
    for name, check in backends.catalog.readiness_checks(mongodb_timeout_s).items():
        checks[name] = _passes(name, check)
    return Readiness(checks)
