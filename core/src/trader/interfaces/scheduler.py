"""The scheduler interface: turn a spec into trigger times."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Schedule(ABC):
    """A pure function of time: when does this schedule fire next?

    Contract, checked by the scheduler conformance suite in ``trader_sdk.testing``:
    :meth:`next_after` is deterministic, returns a time strictly after its argument (or ``None``
    when the schedule has ended), and stepping from one firing to the next never skips a firing:
    ``next_after(t)`` for any ``t`` between two consecutive firings returns the second.
    """

    @abstractmethod
    def next_after(self, time_ms: int) -> int | None:
        """The first firing strictly after ``time_ms`` (ms, UTC), or ``None`` if there is none."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description, such as ``every 5m`` or ``cron '0 * * * *' (UTC)``."""

    def firings(self, start_ms: int, end_ms: int, limit: int = 100_000) -> list[int]:
        """Every firing in ``(start_ms, end_ms]``, at most ``limit`` of them."""
        times: list[int] = []
        current = self.next_after(start_ms)
        while current is not None and current <= end_ms and len(times) < limit:
            times.append(current)
            current = self.next_after(current)
        return times
