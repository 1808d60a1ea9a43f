"""What graywave's local Dask cluster runs in its worker processes. Imported only by a wave that
runs on such a cluster (``flows.wave._on_the_cluster``), and by those workers: distributed takes a
quarter of a second to import."""

from __future__ import annotations

import logging
from typing import Any

from distributed import WorkerPlugin

HEARTBEAT_LOST = "Failed to communicate with scheduler during heartbeat"
"""distributed's error (with a traceback) when a worker's heartbeat finds the scheduler gone."""


class _HeartbeatLost(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return HEARTBEAT_LOST not in record.getMessage()


HEARTBEAT_LOST_FILTER = _HeartbeatLost()


class QuietAtTheEnd(WorkerPlugin):
    """Leaves out ``HEARTBEAT_LOST`` in the local cluster's workers. At the wave's end the cluster
    retires its workers, and a heartbeat in flight at that moment fails: a race inside distributed,
    which ended a quiet wave's output with an error and its traceback. The scheduler lives in the
    wave's own process. The price: a heartbeat that times out in the middle of a wave (a scheduler
    starved of CPU) is not logged by the worker either; the wave's tasks then wait or fail, and the
    wave reports that. A remote cluster's workers (``GRAYWAVE_DASK_ADDRESS``) are left alone."""

    name = "graywave-quiet-at-the-end"

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(HEARTBEAT_LOST_FILTER)  # once per process
