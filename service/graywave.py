"""graywave's use cases for one deployment, built once from the settings: ``Graywave(settings)``
opens the backends they name (``Backends.open``) and groups what is done with them.

    with Graywave(Settings()) as graywave:
        graywave.images.entries(graywave.settings.today(), "alice")   # service.images.Images
        graywave.waves.run(day, "morning")                             # service.wave.Waves
        graywave.daily.median(day)                                     # service.analytics.Daily
        graywave.operations.status()                                   # service.operations.Operations
        graywave.readiness()                                           # service.health

The API holds one for its whole life (``api.deps.State``), each CLI command and each flow run builds
one. The groups are built on first use, so that a query does not import the waves' machinery. What
runs away from it (a wave's batch on a Dask worker: ``service.wave.process_batch``) takes the
settings alone.
"""

from __future__ import annotations

from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

from graywave.config import Settings
from graywave.service.backends import Backends

if TYPE_CHECKING:
    from graywave.service.analytics import Daily
    from graywave.service.health import Readiness
    from graywave.service.images import Images
    from graywave.service.operations import Operations
    from graywave.service.wave import Waves


class Graywave:
    """One deployment's use cases, on the backends that ``settings`` name (opened here, closed by
    ``close`` or at the end of a ``with``), or on ``backends`` already opened from them."""

    def __init__(self, settings: Settings, backends: Backends | None = None):
        self.settings = settings
        self.backends = Backends.open(settings) if backends is None else backends

    @cached_property
    def images(self) -> Images:
        """What the API shows of uploads and what it changes: upload, reprocess, delete."""
        from graywave.service.images import Images

        return Images(self.settings, self.backends)

    @cached_property
    def waves(self) -> Waves:
        """Waves: run, plan, one batch."""
        from graywave.service.wave import Waves

        return Waves(self.settings, self.backends)

    @cached_property
    def daily(self) -> Daily:
        """The analytical questions (week, median, similar users), and the daily analytics run."""
        from graywave.service.analytics import Daily

        return Daily(self.settings, self.backends)

    @cached_property
    def operations(self) -> Operations:
        """What an operator asks (status, rejects, the lake's history) and the lake's maintenance."""
        from graywave.service.operations import Operations

        return Operations(self.settings, self.backends)

    def readiness(self) -> Readiness:
        """Whether each backend can be reached now (``service.health.readiness``); never raises."""
        from graywave.service.health import readiness

        return readiness(self.backends)

    def close(self) -> None:
        self.backends.close()

    def __enter__(self) -> Graywave:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
