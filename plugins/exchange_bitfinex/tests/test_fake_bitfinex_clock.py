"""The fake Bitfinex's simulated clock: advancing, sleeping on it, scheduled actions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trader.model import MINUTE_MS
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeClock, FakeSettings

pytestmark = pytest.mark.timeout(30)


def test_clock_sleepers_wake_in_order_at_their_simulated_time() -> None:
    async def main() -> list[tuple[str, int]]:
        clock = FakeClock(1_000)
        woke: list[tuple[str, int]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now_ms()))

        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2.0), ("a", 1.0))]
        await asyncio.sleep(0)
        assert clock.next_wake_ms() == 2_000
        clock.set(1_500)
        await asyncio.sleep(0)
        assert woke == []
        clock.set(5_000)
        await asyncio.gather(*tasks)
        with pytest.raises(ValueError, match="cannot go back"):
            clock.set(4_999)
        return woke

    assert asyncio.run(main()) == [("a", 5_000), ("b", 5_000)]


def test_advance_stops_at_each_sleeper_and_each_scheduled_action() -> None:
    async def main() -> Any:
        async with FakeBitfinex(FakeSettings(seed=1, history_ms=MINUTE_MS)) as fake:
            start = fake.clock.now_ms()
            seen: list[tuple[str, int]] = []

            async def sleeper() -> None:
                await fake.clock.sleep(7.5)
                seen.append(("slept", fake.clock.now_ms()))

            async def action(server: FakeBitfinex) -> None:
                seen.append(("action", server.clock.now_ms()))

            fake.at(start + 3_000, action)
            fake.at(start + 3_000, lambda server: seen.append(("sync", server.clock.now_ms())))
            task = asyncio.create_task(sleeper())
            await asyncio.sleep(0)
            await fake.advance(10_000)
            await task
            return start, seen, fake.clock.now_ms()

    start, seen, now = asyncio.run(main())
    assert seen == [("action", start + 3_000), ("sync", start + 3_000), ("slept", start + 7_500)]
    assert now == start + 10_000


def test_run_clock_moves_simulated_time_faster_than_real_time() -> None:
    async def main() -> tuple[int, int]:
        async with FakeBitfinex(FakeSettings(seed=1, history_ms=MINUTE_MS)) as fake:
            start = fake.clock.now_ms()
            await fake.run_clock(speed=600.0)
            await asyncio.wait_for(fake.clock.sleep(60.0), 5)  # one simulated minute
            await fake.stop_clock()
            stopped = fake.clock.now_ms()
            await asyncio.sleep(0.05)
            return stopped - start, fake.clock.now_ms() - stopped

    moved, after_stop = asyncio.run(main())
    assert moved >= 60_000 and after_stop == 0
