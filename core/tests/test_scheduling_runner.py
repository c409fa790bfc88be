"""The schedule runner, driven by a fake clock: no test sleeps real time."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any

import pytest

from trader import scheduling
from trader.default_plugins.schedulers import CronSchedule, IntervalSchedule
from trader.interfaces import Schedule
from trader.scheduling import MAX_SLEEP_S, SystemClock, run_schedule

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


class FakeClock:
    """A wall clock that moves only when the runner sleeps or a test moves it."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms
        self.sleeps: list[float] = []

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(1, math.ceil(seconds * 1000))
        await asyncio.sleep(0)


class Recorder:
    """A callback that records (firing, clock time when called) and can act on a firing."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[int, int]] = []
        self.actions: dict[int, Any] = {}

    @property
    def firings(self) -> list[int]:
        return [firing for firing, _ in self.calls]

    async def __call__(self, firing: int) -> None:
        self.calls.append((firing, self.clock.now))
        action = self.actions.get(len(self.calls))
        if action is not None:
            action()


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, timeout=10))


def test_every_firing_runs_in_order_on_time_until_the_schedule_ends() -> None:
    clock = FakeClock(T0 - 30 * SECOND)
    schedule = IntervalSchedule(MINUTE, end_ms=T0 + 5 * MINUTE)
    recorder = Recorder(clock)
    run(run_schedule(schedule, recorder, clock=clock, stop=asyncio.Event()))
    assert recorder.firings == [T0 + k * MINUTE for k in range(6)]
    for firing, called_at in recorder.calls:
        assert firing <= called_at < firing + SECOND  # never early, and not late
    assert clock.now == T0 + 5 * MINUTE  # returned as soon as the schedule ended


def test_long_waits_are_taken_in_bounded_sleeps() -> None:
    clock = FakeClock(T0)
    schedule = IntervalSchedule(HOUR, end_ms=T0 + 2 * HOUR)
    recorder = Recorder(clock)
    run(run_schedule(schedule, recorder, clock=clock, stop=asyncio.Event()))
    assert recorder.firings == [T0 + HOUR, T0 + 2 * HOUR]
    assert max(clock.sleeps) <= MAX_SLEEP_S
    assert len(clock.sleeps) >= 2 * HOUR / (MAX_SLEEP_S * 1000)


def test_the_first_firing_is_strictly_after_now() -> None:
    clock = FakeClock(T0)  # exactly on a firing: that one is not run
    schedule = IntervalSchedule(MINUTE, end_ms=T0 + 2 * MINUTE)
    recorder = Recorder(clock)
    run(run_schedule(schedule, recorder, clock=clock, stop=asyncio.Event()))
    assert recorder.firings == [T0 + MINUTE, T0 + 2 * MINUTE]


def test_an_ended_schedule_returns_at_once() -> None:
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    schedule = IntervalSchedule(MINUTE, end_ms=T0 - HOUR)
    run(run_schedule(schedule, recorder, clock=clock, stop=asyncio.Event()))
    assert recorder.calls == []
    assert clock.sleeps == []


def test_a_stop_set_before_the_start_runs_nothing() -> None:
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    stop = asyncio.Event()
    stop.set()
    run(run_schedule(IntervalSchedule(MINUTE), recorder, clock=clock, stop=stop))
    assert recorder.calls == []


def test_a_stop_set_by_the_callback_ends_the_run_after_it() -> None:
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    stop = asyncio.Event()
    recorder.actions[3] = stop.set
    run(run_schedule(IntervalSchedule(MINUTE), recorder, clock=clock, stop=stop))
    assert recorder.firings == [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]


class BlockingClock(FakeClock):
    """A clock whose sleeps never end by themselves."""

    def __init__(self, now_ms: int) -> None:
        super().__init__(now_ms)
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        await asyncio.Event().wait()


def test_a_stop_interrupts_a_wait_promptly() -> None:
    async def scenario() -> None:
        clock = BlockingClock(T0)
        recorder = Recorder(clock)
        stop = asyncio.Event()
        runner = asyncio.create_task(
            run_schedule(IntervalSchedule(HOUR), recorder, clock=clock, stop=stop)
        )
        await asyncio.wait_for(clock.sleeping.wait(), timeout=5)
        stop.set()
        await asyncio.wait_for(runner, timeout=5)
        assert recorder.calls == []
        # Nothing is left running: the sleep and the stop watcher were both cleaned up.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not others

    asyncio.run(scenario())  # every wait inside has its own timeout


def test_after_a_long_pause_only_the_latest_missed_firing_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0 - SECOND)
    recorder = Recorder(clock)
    stop = asyncio.Event()

    def pause() -> None:  # the second call blocks for 10.5 minutes
        clock.now += 10 * MINUTE + 30 * SECOND

    recorder.actions[2] = pause
    recorder.actions[4] = stop.set
    with caplog.at_level(logging.WARNING, logger="trader.scheduling"):
        run(run_schedule(IntervalSchedule(MINUTE), recorder, clock=clock, stop=stop))
    assert recorder.firings == [T0, T0 + MINUTE, T0 + 11 * MINUTE, T0 + 12 * MINUTE]
    # The latest missed firing ran as soon as the pause ended, not at the next minute.
    assert recorder.calls[2][1] == T0 + 11 * MINUTE + 30 * SECOND
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 9 missed firings" in warnings[0]
    assert "2024-01-01T00:02:00Z" in warnings[0] and "2024-01-01T00:11:00Z" in warnings[0]


def test_a_firing_late_by_less_than_a_period_runs_without_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0 - SECOND)
    recorder = Recorder(clock)
    stop = asyncio.Event()

    def slow() -> None:
        clock.now += 90 * SECOND

    recorder.actions[1] = slow
    recorder.actions[3] = stop.set
    with caplog.at_level(logging.WARNING, logger="trader.scheduling"):
        run(run_schedule(IntervalSchedule(MINUTE), recorder, clock=clock, stop=stop))
    assert recorder.firings == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert recorder.calls[1][1] == T0 + 90 * SECOND  # late, run at once
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_pause_of_years_costs_few_schedule_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding the latest missed firing does not step through every missed one."""
    monkeypatch.setattr(scheduling, "MISSED_SCAN_LIMIT", 5)
    clock = FakeClock(T0 - SECOND)
    schedule = CountingSchedule(IntervalSchedule(SECOND))
    recorder = Recorder(clock)
    stop = asyncio.Event()

    def pause() -> None:  # three years and half a second
        clock.now += 3 * 365 * 24 * HOUR + 500
        schedule.calls = 0

    recorder.actions[1] = pause
    recorder.actions[2] = stop.set
    with caplog.at_level(logging.WARNING, logger="trader.scheduling"):
        run(run_schedule(schedule, recorder, clock=clock, stop=stop))
    assert recorder.firings == [T0, T0 + 3 * 365 * 24 * HOUR]
    assert schedule.calls < 100
    assert any("skipped more than 5 missed firings" in r.getMessage() for r in caplog.records)


class CountingSchedule(Schedule):
    """Counts the calls to the schedule it wraps."""

    def __init__(self, inner: Schedule) -> None:
        self.inner = inner
        self.calls = 0

    def next_after(self, time_ms: int) -> int | None:
        self.calls += 1
        return self.inner.next_after(time_ms)

    def describe(self) -> str:
        return self.inner.describe()


def test_a_wall_clock_stepping_back_repeats_no_firing() -> None:
    clock = FakeClock(T0 - SECOND)
    recorder = Recorder(clock)
    stop = asyncio.Event()

    def step_back() -> None:
        clock.now -= 5 * MINUTE

    recorder.actions[2] = step_back
    recorder.actions[3] = stop.set
    run(run_schedule(IntervalSchedule(MINUTE), recorder, clock=clock, stop=stop))
    assert recorder.firings == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert recorder.calls[2][1] >= T0 + 2 * MINUTE  # waited for the wall clock to catch up


def test_an_error_in_the_callback_ends_the_run_and_propagates() -> None:
    clock = FakeClock(T0)

    async def failing(firing: int) -> None:
        raise ValueError(f"task failed at {firing}")

    with pytest.raises(ValueError, match="task failed"):
        run(run_schedule(IntervalSchedule(MINUTE), failing, clock=clock, stop=asyncio.Event()))


def test_an_error_in_the_clock_propagates() -> None:
    class BrokenClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            raise RuntimeError("timer broke")

    clock = BrokenClock(T0)
    with pytest.raises(RuntimeError, match="timer broke"):
        run(
            run_schedule(
                IntervalSchedule(MINUTE), Recorder(clock), clock=clock, stop=asyncio.Event()
            )
        )


def test_the_system_clock_reads_wall_time_in_ms() -> None:
    before = time.time() * 1000
    now = SystemClock().now_ms()
    after = time.time() * 1000
    assert isinstance(now, int)
    assert before - 1 <= now <= after + 1
    asyncio.run(SystemClock().sleep(0))


def test_after_a_pause_an_irregular_schedule_runs_its_latest_missed_firing() -> None:
    monday = T0  # 2024-01-01 was a Monday
    clock = FakeClock(monday + 9 * HOUR - SECOND)
    recorder = Recorder(clock)
    stop = asyncio.Event()

    def pause() -> None:  # from Monday 09:00 to Wednesday 03:00
        clock.now = monday + 2 * 24 * HOUR + 3 * HOUR

    recorder.actions[1] = pause
    recorder.actions[3] = stop.set
    schedule = CronSchedule("*/5 9-17 * * mon-fri")
    run(run_schedule(schedule, recorder, clock=clock, stop=stop))
    tuesday = monday + 24 * HOUR
    wednesday = tuesday + 24 * HOUR
    assert recorder.firings == [
        monday + 9 * HOUR,
        tuesday + 17 * HOUR + 55 * 60 * SECOND,  # the latest missed, run on waking
        wednesday + 9 * HOUR,
    ]
