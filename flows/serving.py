"""``graywave serve``: Prefect's runner for graywave's deployments, with a stop that loses no round.

Prefect's own ``serve`` cancels every run in flight on SIGTERM: a restart of ``graywave serve`` in
the hour after 10:00 or 17:00 cancelled the burst's wave in its settle window. Here a stop
(SIGTERM to serve: ``systemctl stop`` with ``KillMode=mixed``, ``docker stop``; or SIGINT to serve
alone) goes in this order:

1. the runner takes no new run (it stops polling the server for scheduled runs);
2. the runs in flight are told that serve is stopping (a file whose path they have from serve's
   environment, ``STOP_FILE_ENV``): a wave finishes the round it is processing, records it, stops
   collecting and ends ``Completed``, and schedules a follow-up run for what is left of its settle
   window, which the next ``graywave serve`` runs (``flows.wave``);
3. serve waits for them, up to ``stop_timeout_s``; a run still going then (a round longer than
   that, the analytics, a reprocessing job) is cancelled as Prefect would: the lake stays
   consistent (each flush is one commit, exactly once), and the next wave or a rerun does the rest;
4. the schedules are paused (``graywave serve`` resumes them when it starts) and serve exits.

A second signal during the wait skips it. A signal to serve's whole process group (Ctrl-C in a
terminal, systemd's default ``KillMode=control-group``) reaches its runs' processes too, which then
end ``Crashed`` at once (Prefect's own handling of a signalled run).

Each run beats every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (``flows.automations``): a run
whose process is killed with serve (``kill -9``, the machine gone) is marked ``Crashed`` by the
zombie automation that serve installs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

STOP_FILE_ENV = "_GRAYWAVE_SERVE_STOP_FILE"
"""Set by ``graywave serve`` for the runs it starts: the path of a file that exists once it is stopping."""
DEFAULT_STOP_TIMEOUT_S = 80.0
"""How long a stopping serve waits for its runs: under systemd's default ``TimeoutStopSec`` (90 s)."""
CHECK_S = 0.5


def stop_requested() -> bool:
    """Whether the ``graywave serve`` that runs this flow run is stopping (False outside serve)."""
    path = os.environ.get(STOP_FILE_ENV)
    return path is not None and Path(path).exists()


def serve(
    deployments: Sequence[RunnerDeployment],
    *,
    heartbeat_s: int,
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> None:
    """Register ``deployments`` and run their flow runs until SIGTERM or SIGINT, then stop as the
    module says. Call it from the main thread, with ``STOP_FILE_ENV`` free."""
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True, heartbeat_seconds=heartbeat_s)
    for deployment in deployments:
        runner.add_deployment(deployment)
    folder = tempfile.mkdtemp(prefix="graywave-serve-")
    stop_file = Path(folder) / "stopping"
    os.environ[STOP_FILE_ENV] = str(stop_file)  # the runs' processes inherit it
    try:
        asyncio.run(_serve(runner, stop_file, stop_timeout_s, log))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _serve(runner: Runner, stop_file: Path, stop_timeout_s: float, log: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    running = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # runner.start installs Prefect's SIGTERM handler (cancel every run): replaced here
    stopping, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (hurry if stopping.is_set() else stopping).set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    waiting = asyncio.create_task(stopping.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():  # the runner ended on its own (an error)
        waiting.cancel()
        running.result()
        return

    try:
        poller, _ = _runner_internals(runner)
    except AttributeError as error:  # a Prefect whose Runner changed: stop at once, loudly, rather than drain
        log(f"graywave serve: cannot wait for the runs in flight ({error}); cancelling them")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.astop()
        await running
        return
    poller.stopping = True  # it submits no scheduled run from now on
    stop_file.touch()
    in_flight = _runs_in_flight(runner)
    log(
        f"graywave serve: stopping; no new runs; waiting up to {stop_timeout_s:g} s for {in_flight} run(s) in flight"
        " (a wave finishes its round and records it)"
    )
    began = time.monotonic()
    while _runs_in_flight(runner) and time.monotonic() - began < stop_timeout_s and not hurry.is_set():
        await asyncio.sleep(CHECK_S)
    left = _runs_in_flight(runner)
    if left:
        log(f"graywave serve: cancelling {left} run(s) still going after {time.monotonic() - began:.0f} s")
    else:
        log(f"graywave serve: the runs in flight ended in {time.monotonic() - began:.1f} s")
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    await runner.astop()  # cancels what is left, ends the polling loops; start() then pauses the schedules
    await running


def _runner_internals(runner: Runner) -> tuple[Any, Any]:
    """The started ``Runner``'s scheduled-run poller (its ``stopping`` flag) and process manager
    (``flow_run_count()``): Prefect has no public way to stop taking runs while the running ones
    finish, so the drain uses these two private parts of the pinned Prefect (3.9).
    ``tests/flows/test_serving.py`` fails when an upgrade renames them; here, ``AttributeError``."""
    poller, processes = runner._scheduled_run_poller, runner._process_manager
    if not hasattr(poller, "stopping") or not callable(getattr(processes, "flow_run_count", None)):
        raise AttributeError("Prefect's Runner has no ScheduledRunPoller.stopping or ProcessManager.flow_run_count")
    return poller, processes


def _runs_in_flight(runner: Runner) -> int:
    return int(_runner_internals(runner)[1].flow_run_count())
