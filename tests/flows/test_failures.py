"""How a flow run ends: a ``GraywaveError`` is ``Failed`` with its message; a signal is ``Crashed``."""

from __future__ import annotations

import signal
import uuid

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal
from prefect.states import StateType

from graywave.errors import GraywaveError
from graywave.flows.failures import failing_with_the_reason


@task
def _step() -> int:
    return 1


def flow_run_state(name: str) -> tuple[StateType, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    assert run.state is not None
    return run.state.type, run.state.message or ""


def test_a_graywave_error_ends_the_run_failed_with_its_message():
    name = f"failing-{uuid.uuid4().hex[:8]}"

    @flow(flow_run_name=name)
    @failing_with_the_reason
    def refusing() -> None:
        raise GraywaveError("the lake is held by another wave")

    with pytest.raises(GraywaveError):
        refusing()
    assert flow_run_state(name) == (StateType.FAILED, "GraywaveError: the lake is held by another wave")


def test_a_signal_while_a_task_run_is_being_created_ends_the_run_crashed(monkeypatch):
    """Prefect's task engine, signalled before its task run exists, raises ``ValueError("Task run is not
    set")`` from its crash handler in place of the signal: the flow run ended ``Failed`` with that
    message (a ``graywave analytics run`` signalled at that moment did)."""
    import prefect.task_engine

    def signalled(**_: object) -> None:
        raise TerminationSignal(signal.SIGTERM)

    monkeypatch.setattr(prefect.task_engine, "_create_task_run_locally", signalled)
    name = f"signalled-{uuid.uuid4().hex[:8]}"

    @flow(flow_run_name=name)
    @failing_with_the_reason
    def stepping() -> int:
        return _step()

    received: list[int] = []  # Prefect sends the signal again to the handler it replaced: not pytest's exit
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        with pytest.raises(TerminationSignal):
            stepping()
    finally:
        signal.signal(signal.SIGTERM, previous)
    state, message = flow_run_state(name)
    assert state == StateType.CRASHED, message
    assert received == [signal.SIGTERM]
