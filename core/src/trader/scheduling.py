"""Run a schedule: wait for each firing and call back, until the schedule ends or is stopped.

Firing times are wall-clock times (ms since the epoch, UTC), while sleeping uses the event loop's
monotonic timer; the runner sleeps in bounded steps and re-reads the wall clock after each, so a
clock step (NTP) or a suspended machine is noticed within :data:`MAX_SLEEP_S` seconds. A firing
never runs before the wall clock reaches it, and no firing runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from trader.interfaces import Schedule
from trader.timeutil import format_time

__all__ = [
    "MAX_SLEEP_S",
    "MISSED_SCAN_LIMIT",
    "SYSTEM_CLOCK",
    "Clock",
    "SystemClock",
    "run_schedule",
]

log = logging.getLogger(__name__)

#: The longest single sleep: how soon a wall-clock step or a resumed machine is noticed.
MAX_SLEEP_S: Final = 30.0
#: After a pause, the runner counts missed firings up to this many for its warning.
MISSED_SCAN_LIMIT: Final = 10_000


class Clock(Protocol):
    """Where the runner reads the time and how it sleeps; tests pass a fake one."""

    def now_ms(self) -> int:
        """The wall-clock time: ms since the epoch, UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait about ``seconds``; waking early or late is allowed (the runner re-checks)."""
        ...


class SystemClock:
    """The real clock: ``time.time_ns`` for the time, the event loop's monotonic timer to sleep."""

    def now_ms(self) -> int:
        """The wall-clock time: ms since the epoch, UTC."""
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop (monotonic, unaffected by wall-clock steps)."""
        await asyncio.sleep(seconds)


#: The default clock of :func:`run_schedule`.
SYSTEM_CLOCK: Final = SystemClock()


async def run_schedule(
    schedule: Schedule,
    callback: Callable[[int], Awaitable[object]],
    *,
    clock: Clock = SYSTEM_CLOCK,
    stop: asyncio.Event,
) -> None:
    """Call ``await callback(firing_ms)`` at each firing of ``schedule`` from now on.

    The first firing is ``schedule.next_after(now)``; each later one is the schedule's next
    firing after the previous, so a slow callback delays firings but never drops or repeats one
    on its own. After a pause (a long callback, a blocked event loop, a suspended machine) in
    which several firings went by, only the latest of them runs, at once, and the skipped ones
    are logged as a warning: never a burst.

    Returns when the schedule ends (``next_after`` gives ``None``) or ``stop`` is set, promptly
    even in the middle of a wait; a callback already running is awaited, not cancelled. An
    exception from ``callback`` ends the run and propagates to the caller. ``clock`` defaults
    to the real one (:data:`SYSTEM_CLOCK`).
    """
    if stop.is_set():
        return
    due = schedule.next_after(clock.now_ms())
    while due is not None:
        if not await _wait_until(clock, due, stop):
            return
        firing = _latest_due(schedule, due, clock.now_ms())
        await callback(firing)
        if stop.is_set():
            return
        due = schedule.next_after(firing)


async def _wait_until(clock: Clock, target_ms: int, stop: asyncio.Event) -> bool:
    """Wait until the wall clock reaches ``target_ms``: ``True``, or ``False`` when stopped."""
    while not stop.is_set():
        remaining = target_ms - clock.now_ms()
        if remaining <= 0:
            return True
        await _sleep_or_stop(clock, min(remaining / 1000, MAX_SLEEP_S), stop)
    return False


async def _sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    sleeping = asyncio.ensure_future(clock.sleep(seconds))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeping, stopping):
            task.cancel()
        await asyncio.gather(sleeping, stopping, return_exceptions=True)
    if sleeping.done() and not sleeping.cancelled():
        error = sleeping.exception()
        if error is not None:
            raise error  # the clock failed: let it show


def _latest_due(schedule: Schedule, due: int, now: int) -> int:
    """The firing to run when ``due`` has come at ``now``: ``due`` itself unless later firings
    are due too, then the latest of them, with a warning about the ones skipped."""
    following = schedule.next_after(due)
    if following is None or following > now:
        return due
    # Search back from now in doubling steps for a window that holds a due firing: a handful
    # of calls however long the pause, where stepping through every missed firing might take
    # millions. Stepping from ``due`` itself always finds one, so the loop ends.
    width = 1
    while True:
        found = schedule.next_after(max(now - width, due))
        if found is not None and found <= now:
            break
        width *= 2
    latest = found
    following = schedule.next_after(latest)
    while following is not None and following <= now:
        latest, following = following, schedule.next_after(following)
    skipped = len(schedule.firings(due - 1, latest - 1, limit=MISSED_SCAN_LIMIT + 1))
    count = f"more than {MISSED_SCAN_LIMIT}" if skipped > MISSED_SCAN_LIMIT else str(skipped)
    log.warning(
        "schedule %s: skipped %s missed firing%s from %s; running the latest, %s, once",
        schedule.describe(),
        count,
        "" if skipped == 1 else "s",
        format_time(due),
        format_time(latest),
    )
    return latest
