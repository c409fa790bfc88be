"""Progress reporting for long commands: a live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from typing_extensions import Self


class ProgressReporter:
    """Report progress through ``total`` units (rows, bytes, candles).

    On an interactive terminal this is a rich progress bar on stderr. Elsewhere (CI logs, pipes)
    it prints a plain line at every 10% and one at the end, so logs show progress without noise.
    """

    def __init__(
        self, description: str, total: int, unit: str, *, stream: TextIO | None = None
    ) -> None:
        self.description = description
        self.total = max(total, 0)
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self._next_tenth = 1
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def __enter__(self) -> Self:
        if self.stream.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total or None)
        return self

    def advance_to(self, done: int) -> None:
        """Record that ``done`` units are complete."""
        self.done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        if not self.total or done >= self.total:
            return
        tenth = 10 * done // self.total
        if tenth >= self._next_tenth:
            self.stream.write(
                f"{self.description}: {10 * tenth}% ({done:,} of {self.total:,} {self.unit})\n"
            )
            self.stream.flush()
            self._next_tenth = tenth + 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif exc_type is None:
            elapsed = time.monotonic() - self._started
            self.stream.write(f"{self.description}: done in {elapsed:.1f}s\n")
            self.stream.flush()
