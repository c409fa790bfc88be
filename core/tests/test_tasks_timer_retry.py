"""A task's timeout survives a store that fails with something other than a TraderError."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from trader.interfaces import PluginContext, TaskTransition
from trader.state.sqlite import SqliteStateOptions, SqliteStateStore
from trader.tasks import ORDER_TASK, TaskOwner

T0 = 1_700_000_000_000
ORDER = ORDER_TASK.with_timeouts(submitted=10.0)


class FakeClock:
    """A wall clock that moves only when the test moves it; sleepers wake on every move."""

    def __init__(self) -> None:
        self.now = T0
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await self._moved.wait()

    def advance(self, ms: int) -> None:
        self.now += ms
        self._moved.set()
        self._moved = asyncio.Event()


class GlitchingStore(SqliteStateStore):
    """A real SQLite state store whose first timeout write fails with a plain RuntimeError."""

    def __init__(self, path: Path) -> None:
        context = PluginContext(data_dir=path.parent, config_dir=path.parent)
        super().__init__(SqliteStateOptions(path=str(path)), context)
        self.glitched = asyncio.Event()

    async def record_transition(self, *args: Any, **kwargs: Any) -> TaskTransition:
        trigger = args[3] if len(args) > 3 else kwargs.get("trigger")
        if trigger == "timeout" and not self.glitched.is_set():
            self.glitched.set()
            raise RuntimeError("disk hiccup")
        return await super().record_transition(*args, **kwargs)


def test_a_timeout_whose_write_fails_with_any_error_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.tasks")

    async def scenario() -> None:
        clock = FakeClock()
        reached: asyncio.Queue[str] = asyncio.Queue()
        store = GlitchingStore(tmp_path / "state.sqlite")
        async with store, TaskOwner(store, "trader", [ORDER], clock=clock) as owner:
            owner.add_listener(lambda task, step: reached.put_nowait(step.dest))
            task = await owner.create("order")
            await owner.fire(task.task_id, "submit")
            assert await reached.get() == "submitted"
            clock.advance(10_000)
            await asyncio.wait_for(store.glitched.wait(), 5)

            # The timer is armed again after the failure rather than gone for good.
            async def rearmed() -> None:
                while owner.deadline(task.task_id) != T0 + 15_000:
                    await asyncio.sleep(0)

            await asyncio.wait_for(rearmed(), 5)
            clock.advance(5_000)
            assert await asyncio.wait_for(reached.get(), 5) == "reconciling"
            assert owner.get(task.task_id).state == "reconciling"
            stored = await store.get_task(task.task_id)
            assert stored is not None and stored.state == "reconciling"
        lines = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
        assert lines and task.task_id in lines[0] and "disk hiccup" in lines[0]

    asyncio.run(asyncio.wait_for(scenario(), 20))
