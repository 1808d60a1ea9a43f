"""What graywave's local Dask cluster leaves out of distributed's logs, in the wave's process and in
the cluster's worker processes: the messages of the end that the wave itself asks for. Imported
only by a wave that starts such a cluster (``flows.wave``), and by those workers: distributed
takes a quarter of a second to import."""

from __future__ import annotations

import logging
from typing import Any

from distributed import WorkerPlugin


class LeftOut(logging.Filter):
    """Leaves out distributed's messages that contain ``text``; its others stay."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


WORKERS_STOPPED = LeftOut("still alive after")
"""The nanny's "Worker process still alive after ... seconds, killing" (on ``distributed.nanny``, in
the wave's process): at the wave's end the cluster stops its workers, and on a loaded machine one
may take over 4 s. Its other warnings (memory, restarts) stay."""

HEARTBEAT_LOST = LeftOut("Failed to communicate with scheduler during heartbeat")
"""A worker's error, with a traceback, when its heartbeat finds the scheduler gone (on
``distributed.worker``, in the worker processes: ``QuietAtTheEnd``)."""


class QuietAtTheEnd(WorkerPlugin):
    """Leaves out ``HEARTBEAT_LOST`` in the local cluster's workers. At the wave's end the cluster
    retires its workers, and a heartbeat in flight at that moment fails: a race inside distributed,
    which ended a quiet wave's output with an error and its traceback. The scheduler lives in the
    wave's own process. The price: a heartbeat that times out in the middle of a wave (a scheduler
    starved of CPU) is not logged by the worker either; the wave's tasks then wait or fail, and the
    wave reports that. A remote cluster's workers (``GRAYWAVE_DASK_ADDRESS``) are left alone."""

    name = "graywave-quiet-at-the-end"

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(HEARTBEAT_LOST)  # once per process
