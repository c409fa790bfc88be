"""TimescaleDB mode against a real TimescaleDB engine (PGlite's build, served by Node.js).

The engine takes one connection at a time and no COPY FROM STDIN, so the store runs here with
``pool_size = 1`` and ``ingest = "insert"``; the COPY paths are covered against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trader.candles import resample as reference_resample
from trader.candles import whole_candles
from trader.interfaces import PluginContext, WriteResult
from trader.model import MINUTE_MS, CandleArrays, SeriesKey, Timeframe
from trader_sdk.testing.postgres import TimescaleLiteServer
from trader_storage_timescale.candles import TimescaleCandleOptions, TimescaleCandleStore

T0 = 1_699_920_000_000  # 2023-11-14 00:00 UTC, a Tuesday
SERIES = SeriesKey("ts", "BTC/USDT", Timeframe.parse("1m"))


@pytest.fixture
def server(timescaledb_server: TimescaleLiteServer) -> Iterator[TimescaleLiteServer]:
    """The session's TimescaleDB engine, emptied before and after the test."""
    timescaledb_server.reset()
    yield timescaledb_server
    timescaledb_server.reset()


def _store(server: TimescaleLiteServer, tmp_path: Path, **options: object) -> TimescaleCandleStore:
    settings: dict[str, object] = {
        "dsn": server.url(),
        "pool_size": 1,
        "ingest": "insert",
        "chunk_days": 7,
        **options,
    }
    return TimescaleCandleStore(
        TimescaleCandleOptions.model_validate(settings),
        PluginContext(data_dir=tmp_path, config_dir=tmp_path),
    )


def _candles(offsets: list[int], shift: float = 0.0) -> CandleArrays:
    time = T0 + np.asarray(offsets, dtype=np.int64) * MINUTE_MS
    base = 100.0 + np.asarray(offsets) % 97 * 0.5 + shift
    closed = np.ones(len(offsets), dtype=np.bool_)
    closed[-1:] = False
    return CandleArrays(
        time, base, base + 2, base - 2, base + 1, 1.0 + np.asarray(offsets) % 5, closed
    )


def _query(server: TimescaleLiteServer, statement: str) -> list[tuple[object, ...]]:
    with server.connect() as connection:
        rows: list[tuple[object, ...]] = connection.execute(statement).fetchall()
        return rows


def _refresh(server: TimescaleLiteServer, store: TimescaleCandleStore) -> None:
    """Refresh the hourly aggregate as its policy would (the engine runs no background jobs).

    The engine takes one connection at a time: the store's pooled one is closed first.
    """
    store.engine.dispose()
    with server.connect() as connection:
        connection.execute("CALL refresh_continuous_aggregate('candles_agg_1h', NULL, NULL)")


def test_auto_mode_builds_a_compressed_hypertable_and_says_so(
    server: TimescaleLiteServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with _store(server, tmp_path, compress_after_days=30) as store:
            assert store.mode == "timescaledb"
            assert await store.write(SERIES, _candles(list(range(30)))) == WriteResult(inserted=30)

    with caplog.at_level(logging.INFO, logger="trader_storage_timescale"):
        asyncio.run(scenario())
    # One line names the mode. (PGlite sometimes refuses a connection while it closes the last
    # one; the store then logs its reconnect too, which is not what this test is about.)
    lines = [record.getMessage() for record in caplog.records if "mode (" in record.getMessage()]
    assert len(lines) == 1 and "TimescaleDB mode (hypertable in 7-day chunks" in lines[0], lines
    assert "compressed by series after 30 days" in lines[0]
    hypertables = _query(
        server,
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables",
    )
    assert hypertables == [("candles", True)]
    settings = _query(
        server,
        "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings "
        "WHERE hypertable = 'candles'::regclass",
    )
    assert settings and "series_id" in str(settings[0][0]) and "time" in str(settings[0][1])
    jobs = _query(
        server,
        "SELECT proc_name, config->>'compress_after' FROM timescaledb_information.jobs "
        "WHERE hypertable_name = 'candles'",
    )
    assert ("policy_compression", "30 days") in jobs


def test_time_bucket_resampling_matches_the_reference(
    server: TimescaleLiteServer, tmp_path: Path
) -> None:
    present = [i for i in range(0, 3 * 1440 + 17) if i % 13 != 5]
    candles = _candles(present)
    cases = ["5m", "1h", "3h", "1d", "2d", "1w", "1M"]
    bounds = [(None, None), (T0 + 90 * MINUTE_MS, T0 + 2000 * MINUTE_MS)]

    async def scenario() -> None:
        async with _store(server, tmp_path) as store:
            await store.write(SERIES, candles)
            for text in cases:
                target = Timeframe.parse(text)
                for start, end in bounds:
                    got = await store.resample(SERIES, target, start, end)
                    assert got is not None
                    source = await store.read(SERIES, *whole_candles(target, start, end))
                    expected = reference_resample(source, SERIES.timeframe, target)
                    for column in ("time", "open", "high", "low", "close", "closed"):
                        assert np.array_equal(getattr(got, column), getattr(expected, column)), (
                            f"{text} [{start}, {end}): {column}"
                        )
                    assert np.allclose(got.volume, expected.volume, rtol=1e-9)

    asyncio.run(scenario())


def test_continuous_aggregates_serve_resampling(
    server: TimescaleLiteServer, tmp_path: Path
) -> None:
    candles = _candles(list(range(0, 600)))
    revised = _candles([30, 31], shift=5.0)

    async def scenario() -> None:
        async with _store(server, tmp_path, continuous_aggregates=["1h", "15m"]) as store:
            await store.write(SERIES, candles)
            _refresh(server, store)
            await store.write(SERIES, _candles(list(range(600, 700))))  # after the refresh
            assert await store.write(SERIES, revised) == WriteResult(updated=2)
            _refresh(server, store)
            hour = Timeframe.parse("1h")
            got = await store.resample(SERIES, hour)
            assert got is not None
            expected = reference_resample(await store.read(SERIES), SERIES.timeframe, hour)
            assert got.time.tolist() == expected.time.tolist()
            assert got.open.tolist() == expected.open.tolist()
            assert got.high.tolist() == expected.high.tolist()
            assert got.close.tolist() == expected.close.tolist()
            assert got.closed.tolist() == expected.closed.tolist()

    asyncio.run(scenario())
    views = _query(
        server,
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates "
        "ORDER BY view_name",
    )
    assert views == [("candles_agg_15m", False), ("candles_agg_1h", False)]
    materialized = _query(server, "SELECT count(*) FROM candles_agg_1h")
    assert materialized[0][0] == 12  # 700 minutes: 11 whole hours and one begun
    policies = _query(
        server,
        "SELECT count(*) FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate'",
    )
    assert policies[0][0] == 2


def test_writes_are_idempotent_on_the_hypertable(
    server: TimescaleLiteServer, tmp_path: Path
) -> None:
    candles = _candles(list(range(200)))

    async def scenario() -> None:
        async with _store(server, tmp_path) as store:
            assert await store.write(SERIES, candles) == WriteResult(inserted=200)
            assert await store.write(SERIES, candles) == WriteResult(unchanged=200)
            assert await store.delete(SERIES, T0, T0 + 10 * MINUTE_MS) == 10
            again = await store.write(SERIES, candles.slice(0, 20))
            assert again == WriteResult(inserted=10, unchanged=10)
            assert len(await store.read(SERIES)) == 200
            info = await store.list_series()
            assert [(i.count, i.first, i.last) for i in info] == [(200, T0, T0 + 199 * MINUTE_MS)]

    asyncio.run(scenario())
