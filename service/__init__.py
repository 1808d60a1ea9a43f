"""The service layer: graywave's use cases, with no Prefect and no HTTP.

- ``graywave``: ``Graywave(settings)``, the use cases of one deployment built once from the settings
  (``.images``, ``.waves``, ``.daily``, ``.operations``, ``readiness``), as the API, the CLI and the
  flows call them.
- ``backends``: the blob store, the lake and MongoDB opened from the settings; recording and forgetting.
- ``batch``: one batch of uploads processed (read, decode, histogram, encode, write).
- ``wave``: a wave planned, its batches run by a ``BatchRunner``, every row recorded once (``Waves``).
- ``daily``: the daily questions (user histograms, median, similar users, a user's week) and
  the recording of their results; ``analytics``: the daily analytics run (``Daily``).
- ``images``: what the API shows of each upload, and the API's writes (upload, reprocess, delete: ``Images``).
- ``operations``: status, rejects and the lake's maintenance (``Operations``); ``health``: readiness.
- ``tokens``: the API's bearer tokens.
- ``samples``: photo-like sample images (demo, tests, benchmarks).

``flows`` (Prefect), ``api`` (HTTP) and ``cli`` call these; these call ``kernels`` and ``storage``.
``Graywave`` is imported from here on first use (``from graywave.service import Graywave``), so
that importing one light module of the service (``terms``) does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graywave.service.graywave import Graywave

__all__ = ["Graywave"]


def __getattr__(name: str) -> Any:
    if name == "Graywave":
        from graywave.service.graywave import Graywave

        return Graywave
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
