"""Progress of a long wave: a bar on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class WaveProgress:
    def __init__(self, total: int, label: str, log: Callable[[str], None], every_s: float = 10.0):
        self.total = total
        self.done = 0
        self._label = label
        self._log = log
        self._every_s = every_s
        self._last_log = time.monotonic()
        self._bar: Progress | None = None
        if total and sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> WaveProgress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._bar:
            self._bar.stop()

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar:
            self._bar.update(self._task, completed=self.done)
        elif time.monotonic() - self._last_log >= self._every_s:
            self._last_log = time.monotonic()
            self._log(f"{self._label}: {self.done}/{self.total} uploads handled")
