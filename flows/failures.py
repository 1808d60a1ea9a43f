"""How a flow run ends on an error graywave raises on purpose.

A ``GraywaveError`` (a blob store that is not there, a day without images, another wave holding the
lake) is an answer, not a bug: the run ends ``Failed`` with the error's one-line message, which the
Prefect UI shows as the run's state, and the error is raised to a caller that ran the flow in its
own process (the CLI prints it and exits 1). Raised through Prefect instead, the same error was
logged with its whole traceback, as a bug is.

A signal (SIGTERM, Ctrl-C) ends the run ``Crashed`` (or ``Cancelled``, when Prefect's runner sent it to
cancel the run), as Prefect's flow engine does with the ``TerminationSignal`` or ``KeyboardInterrupt``
that the signal's handler raises in the flow. Code between the handler and the flow can hide that
exception behind an error of its own:

- Prefect's task engine, signalled while it creates a task run, raises ``ValueError("Task run is not
  set")`` from its crash handler, the signal as its context (Prefect 3.9);
- a native library that calls Python code converts the exception into its own error and drops it:
  delta-rs, signalled while it serialises a commit's metadata, raises ``ValueError("... must be
  JSON-serializable: TerminationSignal: ")``, with no context at all.

Either way the run ended ``Failed`` with a message about something else. So the wrapper notes every
SIGTERM and SIGINT that the process receives while the body runs (Python's wakeup file descriptor,
written by the interpreter's own C handler whatever the Python handler then does), and an error that
ends a body during which one arrived raises the signal's exception again.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar, cast

from prefect.exceptions import TerminationSignal
from prefect.states import Failed

from graywave.errors import GraywaveError

P = ParamSpec("P")
R = TypeVar("R")


def failing_with_the_reason(body: Callable[P, R]) -> Callable[P, R]:
    """Wrap a flow's body (under ``@flow``): a ``GraywaveError`` ends the run ``Failed`` with its message."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with _signals_received() as received:
            try:
                return body(*args, **kwargs)
            except Exception as error:
                signalled = _signal_behind(error) or _signal_exception(received())
                if signalled is not None:
                    raise signalled from error
                if isinstance(error, GraywaveError):
                    return cast(R, Failed(message=f"{type(error).__name__}: {error}", data=error))
                raise

    # Prefect reads the parameters' types from the signature and resolves them in the wrapper's
    # module, where the body's names (``date``) are unknown: give it the types resolved.
    setattr(run, "__signature__", inspect.signature(body, eval_str=True))  # noqa: B010 - not a declared attribute
    return run


def _signal_behind(error: BaseException) -> BaseException | None:
    """The ``TerminationSignal`` or ``KeyboardInterrupt`` that ``error`` was raised while handling, if any."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TerminationSignal | KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return None


def _signal_exception(signals: set[int]) -> BaseException | None:
    """The exception that Prefect's SIGTERM handler, or Python's SIGINT handler, raises."""
    if signal.SIGTERM in signals:
        return TerminationSignal(signal.SIGTERM)
    if signal.SIGINT in signals:
        return KeyboardInterrupt()
    return None


@contextlib.contextmanager
def _signals_received() -> Iterator[Callable[[], set[int]]]:
    """Note the signals this process receives meanwhile: yield a function that returns them so far.

    Python's C handler writes each signal's number to the wakeup file descriptor before any Python
    handler runs, so a signal is noted even when the exception its handler raises is lost. Only the
    main thread may set that descriptor: elsewhere (a flow called from a thread) nothing is noted,
    and no signal reaches that thread's code either. The descriptor that was set before (an event
    loop's) is set again afterwards, and is given the signals that arrived meanwhile."""
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    os.set_blocking(writer, False)
    try:
        previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        previous = None
    received: set[int] = set()

    def read() -> set[int]:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 512):
                received.update(chunk)
                if previous not in (None, -1):
                    with contextlib.suppress(OSError):
                        os.write(previous, chunk)
        return received

    try:
        yield read
    finally:
        if previous is not None:
            signal.set_wakeup_fd(previous)
            read()
        os.close(reader)
        os.close(writer)
