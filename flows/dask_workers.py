"""What graywave's local Dask cluster runs in its worker processes. Imported only by a wave that
starts such a cluster (``flows.wave.task_runner``), and by those workers: distributed takes a
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
    wave's own process, so a worker loses it only when the wave ends or dies, and the wave's own
    outcome says which. A remote cluster's workers (``GRAYWAVE_DASK_ADDRESS``) are left alone."""

    name = "graywave-quiet-at-the-end"

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(HEARTBEAT_LOST_FILTER)  # once per process
