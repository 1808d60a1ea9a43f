"""How a flow run ends: a ``GraywaveError`` is ``Failed`` with its message; a signal is ``Crashed``."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator

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


@contextlib.contextmanager
def sigterm_noted() -> Iterator[list[int]]:
    """Prefect sends a SIGTERM again to the handler it replaced: a list of them here, not pytest's exit."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


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

    with sigterm_noted() as received, pytest.raises(TerminationSignal):
        stepping()
    state, message = flow_run_state(name)
    assert state == StateType.CRASHED, message
    assert received == [signal.SIGTERM]


@pytest.mark.parametrize("error", [ValueError, GraywaveError])
@pytest.mark.parametrize(
    ("signum", "raised"),
    [(signal.SIGTERM, TerminationSignal), (signal.SIGINT, KeyboardInterrupt)],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_a_signal_that_a_library_turns_into_an_error_of_its_own_still_ends_the_run_crashed(error, signum, raised):
    """delta-rs, signalled while it serialised a commit's metadata, raised ``ValueError("... must be
    JSON-serializable: TerminationSignal: ")`` with no context, and the wave's run ended ``Failed`` (a
    ``graywave wave run`` signalled mid-commit did); graywave's storage may turn such an error into a
    ``GraywaveError``. The body here does what the library does: it catches the exception that the
    signal's handler raises, and raises its own outside the handler."""
    name = f"swallowed-{uuid.uuid4().hex[:8]}"

    @flow(flow_run_name=name)
    @failing_with_the_reason
    def committing() -> None:
        try:
            os.kill(os.getpid(), signum)  # the handler raises in here, at the latest during the sleep
            time.sleep(30)
        except (TerminationSignal, KeyboardInterrupt) as signalled:
            message = f"custom_metadata value must be JSON-serializable: {type(signalled).__name__}: "
        raise error(message)

    with sigterm_noted(), pytest.raises(raised):
        committing()
    state, message = flow_run_state(name)
    assert state == StateType.CRASHED, message


def test_the_wakeup_descriptor_set_before_a_flow_is_set_again_and_given_the_signals_it_missed():
    """An event loop of the main thread learns of its signals through the wakeup descriptor: the
    wrapper's own, set while the body runs, must hand over what it received and then step aside."""
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    os.set_blocking(writer, False)

    @flow
    @failing_with_the_reason
    def signalled() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)

    previous_handler = signal.signal(signal.SIGUSR1, lambda *_: None)
    previous_fd = signal.set_wakeup_fd(writer)
    try:
        signalled()
        assert signal.set_wakeup_fd(previous_fd) == writer
        assert os.read(reader, 16) == bytes([signal.SIGUSR1])
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGUSR1, previous_handler)
        os.close(reader)
        os.close(writer)
