"""How a flow run ends on an error graywave raises on purpose.

A ``GraywaveError`` (a blob store that is not there, a day without images, another wave holding the
lake) is an answer, not a bug: the run ends ``Failed`` with the error's one-line message, which the
Prefect UI shows as the run's state, and the error is raised to a caller that ran the flow in its
own process (the CLI prints it and exits 1). Raised through Prefect instead, the same error was
logged with its whole traceback, as a bug is.

A signal (SIGTERM, Ctrl-C) ends the run ``Crashed``, as Prefect's flow engine does with the
``TerminationSignal`` that it raises in the flow. One moment hid it: signalled while it creates a task
run, Prefect's task engine raises ``ValueError("Task run is not set")`` from its crash handler in place
of the signal (Prefect 3.9), and the run ended ``Failed`` with that message. The signal is raised again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
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
        try:
            return body(*args, **kwargs)
        except GraywaveError as error:
            return cast(R, Failed(message=f"{type(error).__name__}: {error}", data=error))
        except Exception as error:
            signal = _signal_behind(error)
            if signal is None:
                raise
            raise signal from error

    # Prefect reads the parameters' types from the signature and resolves them in the wrapper's
    # module, where the body's names (``date``) are unknown: give it the types resolved.
    setattr(run, "__signature__", inspect.signature(body, eval_str=True))  # noqa: B010 - not a declared attribute
    return run


def _signal_behind(error: BaseException) -> TerminationSignal | None:
    """The ``TerminationSignal`` that ``error`` was raised while handling, if any."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TerminationSignal):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return None
