"""StoreThreads: blocking store work on the store's own threads, with clear errors."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from trader.errors import DataError, StorageError
from trader.stores.threads import StoreThreads


def _threads(*, keep_cause: bool = True, workers: int = 1) -> StoreThreads:
    return StoreThreads(
        "test store",
        thread_name="test-store",
        driver_errors=(sqlite3.Error,),
        describe=lambda what, error: StorageError(f"test store: {what} failed: {error}"),
        workers=workers,
        keep_cause=keep_cause,
    )


def test_jobs_run_off_the_event_loop_thread_in_call_order() -> None:
    asyncio.run(_jobs_run_off_the_event_loop_thread_in_call_order())


async def _jobs_run_off_the_event_loop_thread_in_call_order() -> None:
    threads = _threads()
    assert threads.start()
    assert not threads.start()
    seen: list[tuple[int, str]] = []

    def job(number: int) -> int:
        seen.append((number, threading.current_thread().name))
        return number * 2

    results = await asyncio.gather(*(threads.run("job", lambda n=n: job(n)) for n in range(20)))
    await threads.stop(wait=True)
    assert results == [n * 2 for n in range(20)]
    assert [number for number, _ in seen] == list(range(20))
    assert all(name.startswith("test-store") for _, name in seen)
    assert not threads.running


def test_driver_errors_become_storage_errors_and_trader_errors_pass_through() -> None:
    asyncio.run(_driver_errors_become_storage_errors_and_trader_errors_pass_through())


async def _driver_errors_become_storage_errors_and_trader_errors_pass_through() -> None:
    threads = _threads()
    threads.start()

    def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    def bad_data() -> None:
        raise DataError("line 3: bad candle")

    with pytest.raises(StorageError, match="test store: write s1 failed: disk I/O error") as info:
        await threads.run("write", broken, subject="s1")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(DataError, match="line 3"):
        await threads.run("write", bad_data)
    await threads.stop()


def test_keep_cause_false_hides_the_driver_exception() -> None:
    asyncio.run(_keep_cause_false_hides_the_driver_exception())


async def _keep_cause_false_hides_the_driver_exception() -> None:
    threads = _threads(keep_cause=False)
    threads.start()

    def broken() -> None:
        raise sqlite3.OperationalError("password=hunter2 rejected")

    with pytest.raises(StorageError) as info:
        await threads.run("open", broken)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    await threads.stop()


def test_other_errors_are_not_translated() -> None:
    asyncio.run(_other_errors_are_not_translated())


async def _other_errors_are_not_translated() -> None:
    threads = _threads()
    threads.start()

    def bug() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await threads.run("read", bug)
    await threads.stop()


def test_a_closed_store_says_so_and_stop_runs_the_last_job_once() -> None:
    asyncio.run(_a_closed_store_says_so_and_stop_runs_the_last_job_once())


async def _a_closed_store_says_so_and_stop_runs_the_last_job_once() -> None:
    threads = _threads()
    with pytest.raises(StorageError, match="cannot read s1: the store is not open; await open"):
        await threads.run("read", lambda: None, subject="s1")
    threads.start()
    closed: list[str] = []
    await threads.stop(lambda: closed.append(threading.current_thread().name))
    await threads.stop(lambda: closed.append("again"))
    assert len(closed) == 1 and closed[0].startswith("test-store")
    with pytest.raises(StorageError, match="not open"):
        await threads.run("read", lambda: None)


def test_a_store_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one worker thread"):
        _threads(workers=0)
