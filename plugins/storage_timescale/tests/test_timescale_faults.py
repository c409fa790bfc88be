"""The candle store survives its server being killed in the middle of a large import."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from trader.interfaces import PluginContext, WriteResult
from trader.model import MINUTE_MS, CandleArrays, SeriesKey, Timeframe
from trader_sdk.testing.postgres import PostgresCluster, PostgresDatabase, PostgresUnavailable
from trader_storage_timescale.candles import TimescaleCandleOptions, TimescaleCandleStore

SERIES = SeriesKey("faults", "BTC/USDT", Timeframe.parse("1m"))
T0 = 1_600_000_000_000 - 1_600_000_000_000 % MINUTE_MS


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own, since the test kills it."""
    try:
        server = PostgresCluster.start_new()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL unavailable: {error}")
    with server:
        yield server


def _candles(count: int) -> CandleArrays:
    times = T0 + np.arange(count, dtype=np.int64) * MINUTE_MS
    base = 100.0 + np.arange(count) % 1000 * 0.01
    return CandleArrays(times, base, base + 1, base - 1, base + 0.5, np.ones(count))


def _kill_during_copy(cluster: PostgresCluster, stop: threading.Event, killed: list[int]) -> None:
    """Kill the server as soon as a COPY into it is running, then start it again."""
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as watcher:
        while not stop.is_set():
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'COPY %% FROM STDIN%%'"
            ).fetchone()
            if row is not None and row[0]:
                break
        else:
            return
    cluster.kill()
    killed.append(1)
    cluster.start()


def _check_stored_once(cluster: PostgresCluster, database: str, expected: CandleArrays) -> None:
    with psycopg.connect(cluster.dsn(database)) as connection:
        row = connection.execute(
            "SELECT count(*), count(DISTINCT time), min(time) = to_timestamp(%s / 1000.0), "
            "max(time) = to_timestamp(%s / 1000.0) FROM candles",
            (int(expected.time[0]), int(expected.time[-1])),
        ).fetchone()
    assert row == (len(expected), len(expected), True, True)


@pytest.mark.parametrize("chunk", [25_000, 400_000], ids=["chunked-import", "one-write"])
def test_killed_server_mid_import_stores_every_candle_once(
    cluster: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture, chunk: int
) -> None:
    database = cluster.create_database()
    candles = _candles(400_000)
    options = TimescaleCandleOptions(dsn=cluster.url(database), reconnect_timeout_s=60)
    context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
    stop = threading.Event()
    killed: list[int] = []

    async def run_import() -> WriteResult:
        total = WriteResult()
        async with TimescaleCandleStore(options, context) as store:
            await store.write(SERIES, candles.slice(0, 10))  # schema and series exist
            for begin in range(10, len(candles), chunk):
                total += await store.write(SERIES, candles.slice(begin, begin + chunk))
            stored = await store.read(SERIES)
        assert np.array_equal(stored.time, candles.time)
        assert np.array_equal(stored.close, candles.close)
        return total

    killer = threading.Thread(target=_kill_during_copy, args=(cluster, stop, killed))
    with caplog.at_level(logging.WARNING, logger="trader_storage_timescale"):
        killer.start()
        try:
            total = asyncio.run(run_import())
        finally:
            stop.set()
            killer.join(timeout=120)
    assert killed, "the server was never killed during a COPY"
    assert any("connection lost" in record.getMessage() for record in caplog.records)
    assert total == WriteResult(inserted=len(candles) - 10), f"the import reported {total}"
    _check_stored_once(cluster, database, candles)


def test_a_clash_with_an_outside_writer_falls_back_to_the_merge(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    """A batch copied into an empty span meets a row another writer committed meanwhile: the
    copy is undone and the batch merged, with exact counts."""
    candles = _candles(1000)
    options = TimescaleCandleOptions(dsn=postgres_database.url)
    context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)

    async def prepare() -> None:
        async with TimescaleCandleStore(options, context) as store:
            await store.write(SERIES, _candles(2001).slice(2000, 2001))  # schema, partition

    asyncio.run(prepare())
    outsider = psycopg.connect(postgres_database.dsn)
    outsider.execute(
        "INSERT INTO candles SELECT id, to_timestamp(%s / 1000.0), 1, 2, 0.5, 1, 1, true "
        "FROM candle_series",
        (int(candles.time[500]),),
    )  # not committed yet: the store's emptiness check cannot see it

    def commit_once_the_copy_waits() -> None:
        with psycopg.connect(postgres_database.dsn, autocommit=True) as watcher:
            for _ in range(100_000):
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'COPY %'"
                ).fetchone()
                if row is not None and row[0]:
                    break
        outsider.commit()

    committer = threading.Thread(target=commit_once_the_copy_waits)
    committer.start()

    async def write() -> WriteResult:
        async with TimescaleCandleStore(options, context) as store:
            result = await store.write(SERIES, candles)
            stored = await store.read(SERIES, None, int(candles.time[-1]) + 1)
        assert np.array_equal(stored.close, candles.close)
        return result

    try:
        result = asyncio.run(write())
    finally:
        committer.join(timeout=60)
        outsider.close()
    assert result == WriteResult(inserted=999, updated=1)
