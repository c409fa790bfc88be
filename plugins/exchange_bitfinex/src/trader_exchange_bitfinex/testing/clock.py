"""The fake Bitfinex's clock: simulated milliseconds that move only when told to."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """Simulated time in integer milliseconds since the epoch, UTC.

    Every timing of the fake (candle periods, heartbeats, rate-limit windows, the 60 s block,
    maintenance windows) is measured on this clock, so a test can run a 30-minute session in
    seconds. The clock moves only through :meth:`FakeBitfinex.advance` (or its background
    runner); :meth:`sleep` lets code under test wait on simulated time instead of real time.
    """

    def __init__(self, start_ms: int) -> None:
        self._now = int(start_ms)
        self._sequence = itertools.count()
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        """Return the simulated time in milliseconds."""
        return self._now

    def time(self) -> float:
        """Return the simulated time in seconds (a drop-in for ``time.time``)."""
        return self._now / 1000.0

    async def sleep(self, seconds: float) -> None:
        """Wait until the simulated clock has moved ``seconds`` forward."""
        wake = self._now + max(0, round(seconds * 1000))
        if wake <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (wake, next(self._sequence), future))
        await future

    def next_wake_ms(self) -> int | None:
        """Return when the earliest :meth:`sleep` ends, or ``None`` when nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def set(self, time_ms: int) -> None:
        """Move the clock to ``time_ms`` (never backwards) and wake the sleepers that are due.

        Meant for the fake itself: tests move time with :meth:`FakeBitfinex.advance`, which also
        plays the market up to the new time.
        """
        if time_ms < self._now:
            raise ValueError(f"the fake clock cannot go back from {self._now} to {time_ms}")
        self._now = time_ms
        while self._sleepers and self._sleepers[0][0] <= time_ms:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
