"""The two private parts of Prefect's ``Runner`` that ``graywave serve``'s drain relies on
(``flows.serving._runner_internals``): present in the pinned Prefect, and a clear error where an
upgrade removed them. The drain itself is tested end to end in ``test_served.py``."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace

import pytest
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, temporary_settings

from graywave.flows.serving import _runner_internals, _runs_in_flight


def test_the_runner_parts_that_the_drain_uses_are_in_this_prefect(prefect_server):
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            runner = Runner(pause_on_shutdown=False)
            asyncio.run(runner.start(run_once=True))  # its poller polls once; start() installs a SIGTERM handler
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    poller, processes = _runner_internals(runner)
    assert poller.stopping is False and processes.flow_run_count() == 0
    assert _runs_in_flight(runner) == 0


@pytest.mark.parametrize(
    "runner",
    [
        SimpleNamespace(_process_manager=SimpleNamespace(flow_run_count=lambda: 0)),  # no poller
        SimpleNamespace(_scheduled_run_poller=SimpleNamespace(stopping=False), _process_manager=object()),
        SimpleNamespace(_scheduled_run_poller=object(), _process_manager=SimpleNamespace(flow_run_count=lambda: 0)),
    ],
    ids=["no poller", "no flow_run_count", "no stopping flag"],
)
def test_a_runner_without_them_is_an_attribute_error(runner):
    with pytest.raises(AttributeError):
        _runner_internals(runner)
