"""The one bounded window of in-flight work (``service.scheduling.bounded``)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

from graywave.service.scheduling import bounded


def test_at_most_the_limit_is_submitted_and_not_handed_back():
    submitted: list[int] = []
    handed_back: list[int] = []

    def submit(item: int) -> int:
        submitted.append(item)
        assert len(submitted) - len(handed_back) <= 3 + 1  # the next is submitted before one is handed back
        return item

    for item in bounded(submit, range(10), 3):
        handed_back.append(item)
        assert len(submitted) - len(handed_back) <= 3
    assert handed_back == list(range(10))  # by default in the order submitted
    assert list(bounded(submit, [], 3)) == [] and list(bounded(lambda x: x, [1, 2], 0)) == [1, 2]


def test_a_caller_that_stops_leaves_no_more_than_the_limit_submitted():
    submitted: list[int] = []
    window = bounded(lambda item: submitted.append(item) or item, range(100), 4)
    assert next(window) == 0
    window.close()
    assert submitted == [0, 1, 2, 3, 4]  # the first handed back, four pending, nothing queued behind them


def test_threads_are_handed_back_as_they_finish_within_the_window():
    """The second piece finishes first: it comes back first; never more than two run at once."""
    release_first = threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()

    def work(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if item == 0:
            assert release_first.wait(30)
        with lock:
            running[0] -= 1
        return item

    with ThreadPoolExecutor(8) as pool:

        def submit(item: int) -> Future[int]:
            return pool.submit(work, item)

        order = []
        for finished in bounded(submit, range(6), 2, as_completed):
            order.append(finished.result())
            if len(order) == 4:  # 1, 2, 3, 4 done while 0 waits
                release_first.set()
    assert order[:4] == [1, 2, 3, 4] and sorted(order) == list(range(6))
    assert most[0] == 2
