"""The one bounded window of in-flight work: batches on threads or as Prefect tasks, blob reads and writes.

``bounded`` submits work a piece at a time, never more than ``limit`` pieces pending besides the
one being handed back, and hands each back in the order ``completed`` picks: as they finish
(``concurrent.futures.as_completed``, ``prefect.futures.as_completed``), or in the order submitted
(the default, for a stream read ahead or written behind). The caller takes the result of what it is
handed; the next piece is submitted only then, so a caller that stops (a failed batch, a stopped
wave) leaves at most ``limit`` pieces running, and none started after it.

Why not hand everything to the executor and let its own bound hold it (``ThreadPoolExecutor``'s
``max_workers``, Prefect's task runner): every piece would be queued at once, every batch a Prefect
task run from the start, every upload's bytes read ahead of a streaming batch, and on a failure the
executor would still run what was queued (batches that write processed images no wave records).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
F = TypeVar("F")


def bounded(
    submit: Callable[[T], F],
    items: Iterable[T],
    limit: int,
    completed: Callable[[list[F]], Iterator[F]] = iter,
) -> Iterator[F]:
    """``submit(item)`` for each of ``items``, at most ``limit`` (at least one) pending: each handed
    back as ``completed(pending)`` picks it first (by default the oldest), once the next is submitted
    in its place (so that it runs while the caller takes the result)."""
    queue = iter(items)
    pending = [submit(item) for item in islice(queue, max(limit, 1))]
    while pending:
        finished = next(completed(pending))
        del pending[next(k for k, piece in enumerate(pending) if piece is finished)]
        for following in islice(queue, 1):
            pending.append(submit(following))
        yield finished
