"""The SQLite candle store: the conformance suite, plus what only SQLite files can show."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import create_engine

from trader.candles import resample
from trader.errors import ModelError, StorageError
from trader.interfaces import CandleStore, Gap, PluginContext, WriteResult
from trader.model import DAY_MS, MAX_TIME_MS, MINUTE_MS, CandleArrays, SeriesKey, Timeframe
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader.stores.sqlite_candles import (
    BLOCK_SLOTS,
    HEAD_REVISION,
    MIGRATIONS_DIR,
    VERSION_TABLE,
    SqliteCandleOptions,
    SqliteCandleStore,
)
from trader_sdk.testing.candle_store import (
    CandleStoreConformance,
    assert_same_candles,
    make_candles,
    run_with_store,
)

M = MINUTE_MS
T0 = 1_699_920_000_000  # 2023-11-14 00:00 UTC
SERIES = SeriesKey("sqlite", "BTC/USDT", Timeframe.parse("1m"))


class TestSqliteCandleStore(CandleStoreConformance):
    """The sqlite store passes the whole candle store conformance suite."""

    @pytest.fixture
    def candle_store_factory(self, tmp_path: Path) -> Callable[[], CandleStore]:
        context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
        return lambda: SqliteCandleStore(SqliteCandleOptions(), context)


@pytest.fixture
def context(tmp_path: Path) -> PluginContext:
    return PluginContext(data_dir=tmp_path / "data", config_dir=tmp_path / "config")


@pytest.fixture
def factory(context: PluginContext) -> Callable[[], SqliteCandleStore]:
    return lambda: SqliteCandleStore(SqliteCandleOptions(), context)


def _file(context: PluginContext) -> Path:
    return context.data_dir / "candles.sqlite"


def _alembic(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def test_file_defaults_to_the_data_dir_and_runs_in_wal_mode(
    factory: Callable[[], SqliteCandleStore], context: PluginContext
) -> None:
    async def scenario(store: CandleStore) -> None:
        await store.write(SERIES, make_candles([T0]))

    run_with_store(factory, scenario)
    with sqlite3.connect(_file(context)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_relative_paths_resolve_against_the_config_dir(context: PluginContext) -> None:
    store = SqliteCandleStore(SqliteCandleOptions(path="db/c.sqlite"), context)
    assert store.path == context.config_dir / "db" / "c.sqlite"
    run_with_store(lambda: store, lambda s: s.write(SERIES, make_candles([T0])))
    assert (context.config_dir / "db" / "c.sqlite").exists()


def test_options_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra"):
        SqliteCandleOptions.model_validate({"path": "x.sqlite", "journal": "wal"})
    with pytest.raises(ValidationError, match="synchronous"):
        SqliteCandleOptions.model_validate({"synchronous": "sometimes"})


def test_in_memory_store_keeps_candles_while_open(context: PluginContext) -> None:
    store = SqliteCandleStore(SqliteCandleOptions(path=":memory:"), context)

    async def scenario(store: CandleStore) -> CandleArrays:
        await store.write(SERIES, make_candles([T0, T0 + M]))
        return await store.read(SERIES)

    assert len(run_with_store(lambda: store, scenario)) == 2
    assert not context.data_dir.exists(), "an in-memory store created files"


def test_the_migration_revision_is_recorded_and_is_alembics_head(
    factory: Callable[[], SqliteCandleStore], context: PluginContext
) -> None:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert script.get_heads() == [HEAD_REVISION]
    run_with_store(factory, lambda store: store.list_series())
    with sqlite3.connect(_file(context)) as raw:
        rows = raw.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()  # noqa: S608
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert rows == [(HEAD_REVISION,)]
    assert "alembic_version" not in tables, "the generic version table would clash with others"


def test_open_skips_migrations_when_the_file_is_current(
    factory: Callable[[], SqliteCandleStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_with_store(factory, lambda store: store.write(SERIES, make_candles([T0])))

    def refuse(self: SqliteCandleStore) -> None:
        raise AssertionError("migrations ran on a file already at the head revision")

    monkeypatch.setattr(SqliteCandleStore, "_migrate", refuse)
    assert len(run_with_store(factory, lambda store: store.read(SERIES))) == 1


def test_a_file_at_an_older_revision_is_migrated_and_keeps_its_candles(
    factory: Callable[[], SqliteCandleStore], context: PluginContext
) -> None:
    candles = make_candles([T0 + i * M for i in range(3000)])
    run_with_store(factory, lambda store: store.write(SERIES, candles))
    engine = create_engine(f"sqlite:///{_file(context)}")
    with engine.begin() as connection:
        command.downgrade(_alembic(connection), "0001")
    with sqlite3.connect(_file(context)) as raw:
        assert raw.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0001",)]  # noqa: S608
        columns = [row[1] for row in raw.execute("PRAGMA table_info(series)")]
    assert "block_slots" not in columns
    engine.dispose()

    async def scenario(store: CandleStore) -> tuple[CandleArrays, WriteResult]:
        return await store.read(SERIES), await store.write(SERIES, candles)

    stored, rewrite = run_with_store(factory, scenario)
    assert_same_candles(stored, candles, "after migrating from 0001")
    assert rewrite == WriteResult(unchanged=3000)
    with sqlite3.connect(_file(context)) as raw:
        assert raw.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [  # noqa: S608
            (HEAD_REVISION,)
        ]
        assert raw.execute("SELECT block_slots FROM series").fetchall() == [(BLOCK_SLOTS,)]


def test_a_file_from_a_newer_trader_is_refused(
    factory: Callable[[], SqliteCandleStore], context: PluginContext
) -> None:
    run_with_store(factory, lambda store: store.list_series())
    with sqlite3.connect(_file(context)) as raw:
        raw.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")  # noqa: S608
    with pytest.raises(StorageError, match=r"revision '9999'.*upgrade trader"):
        run_with_store(factory, lambda store: store.list_series())


def test_a_file_that_is_not_a_database_is_reported_with_its_path(
    factory: Callable[[], SqliteCandleStore], context: PluginContext
) -> None:
    context.data_dir.mkdir(parents=True)
    _file(context).write_bytes(b"these are not the candles you are looking for" * 100)
    with pytest.raises(StorageError, match=r"candles\.sqlite: open failed: .*not a database"):
        run_with_store(factory, lambda store: store.list_series())


def test_calls_on_a_store_that_is_not_open_raise_storage_error(
    factory: Callable[[], SqliteCandleStore],
) -> None:
    store = factory()
    with pytest.raises(
        StorageError, match=r"cannot read sqlite:BTC/USDT:1m: the store is not open"
    ):
        asyncio.run(store.read(SERIES))


def test_a_failed_write_is_atomic(
    factory: Callable[[], SqliteCandleStore], context: PluginContext
) -> None:
    before = make_candles([T0 + i * M for i in range(2500)])
    run_with_store(factory, lambda store: store.write(SERIES, before))
    # A trigger makes SQLite refuse the third block of the batch, after two were written.
    with sqlite3.connect(_file(context)) as raw:
        raw.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON candle_blocks WHEN NEW.block = "
            f"{(T0 // M) // BLOCK_SLOTS + 5} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    revised = make_candles([T0 + i * M for i in range(0, 6000, 2)], shift=1.0)
    other = SeriesKey("sqlite", "ETH/USDT", Timeframe.parse("1m"))

    async def failing(store: CandleStore) -> None:
        with pytest.raises(StorageError, match=r"candles\.sqlite: write .*injected failure"):
            await store.write(SERIES, revised)
        with pytest.raises(StorageError, match="injected failure"):
            await store.write(other, make_candles([T0 + i * M for i in range(6000)]))
        assert_same_candles(await store.read(SERIES), before, "after the failed write")
        assert [info.key for info in await store.list_series()] == [SERIES]
        assert len(await store.read(other)) == 0

    run_with_store(factory, failing)
    with sqlite3.connect(_file(context)) as raw:
        assert raw.execute("SELECT count(*) FROM series").fetchone() == (1,)
        raw.execute("DROP TRIGGER refuse")

    async def recovered(store: CandleStore) -> None:
        result = await store.write(other, make_candles([T0 + i * M for i in range(6000)]))
        assert result == WriteResult(inserted=6000)
        result = await store.write(SERIES, revised)
        assert result == WriteResult(inserted=1750, updated=1250)

    run_with_store(factory, recovered)


def test_two_open_stores_on_one_file_see_each_others_writes(
    factory: Callable[[], SqliteCandleStore],
) -> None:
    async def scenario() -> None:
        async with factory() as writer, factory() as reader:
            await writer.write(SERIES, make_candles([T0, T0 + M]))
            assert len(await reader.read(SERIES)) == 2
            assert await reader.write(SERIES, make_candles([T0 + 2 * M])) == WriteResult(1)
            assert len(await writer.latest(SERIES, 10)) == 3

    asyncio.run(scenario())


def test_reads_deletes_and_latest_across_many_blocks(
    factory: Callable[[], SqliteCandleStore],
) -> None:
    times = [T0 + i * M for i in range(10_000) if i % 1000 != 999]
    candles = make_candles(times)

    async def scenario(store: CandleStore) -> None:
        assert await store.write(SERIES, candles) == WriteResult(inserted=len(times))
        assert_same_candles(
            await store.latest(SERIES, 2500), candles.slice(len(times) - 2500, len(times))
        )
        start, end = T0 + 1500 * M, T0 + 7300 * M
        inside = [t for t in times if start <= t < end]
        assert await store.delete(SERIES, start, end) == len(inside)
        left = make_candles([t for t in times if not start <= t < end])
        assert_same_candles(await store.read(SERIES), left)
        gaps = await store.gaps(SERIES)
        assert gaps == [
            Gap(T0 + 999 * M, T0 + 1000 * M, 1),
            Gap(start, end, 5800),
            Gap(T0 + 7999 * M, T0 + 8000 * M, 1),
            Gap(T0 + 8999 * M, T0 + 9000 * M, 1),
        ]

    run_with_store(factory, scenario)


def test_monthly_and_weekly_series(factory: Callable[[], SqliteCandleStore]) -> None:
    daily = SeriesKey("sqlite", "BTC/USDT", Timeframe.parse("1d"))
    monthly = SeriesKey("sqlite", "BTC/USDT", Timeframe.parse("1M"))
    weekly = SeriesKey("sqlite", "BTC/USDT", Timeframe.parse("1w"))
    first_day = 1_672_531_200_000  # 2023-01-01
    days = make_candles([first_day + i * DAY_MS for i in range(400) if i != 40])
    months = resample(days, daily.timeframe, monthly.timeframe)

    async def scenario(store: CandleStore) -> None:
        await store.write(daily, days)
        assert await store.write(monthly, months) == WriteResult(inserted=len(months))
        built = await store.resample(daily, monthly.timeframe)
        assert built is not None
        assert_same_candles(built, months, "1d to 1M inside the store")
        await store.delete(monthly, 1_677_628_800_000, 1_682_899_200_000)  # March, April 2023
        assert await store.gaps(monthly) == [Gap(1_677_628_800_000, 1_682_899_200_000, 2)]
        with pytest.raises(ModelError, match="not aligned to 1w"):
            await store.write(weekly, make_candles([first_day]))  # a Sunday
        monday = first_day + DAY_MS
        assert await store.write(weekly, make_candles([monday])) == WriteResult(1)

    run_with_store(factory, scenario)


def test_a_rejected_batch_names_the_row_and_the_problem(
    factory: Callable[[], SqliteCandleStore],
) -> None:
    candles = make_candles([T0, T0 + M, T0 + 2 * M])
    candles.low[2] = candles.high[2] + 1

    async def scenario(store: CandleStore) -> None:
        with pytest.raises(ModelError, match=r"row 2: low .* is above high .*nothing was written"):
            await store.write(SERIES, candles)
        with pytest.raises(ModelError, match="latest"):
            await store.latest(SERIES, -1)

    run_with_store(factory, scenario)


def test_the_sqlite_plugin_registers_the_store(context: PluginContext) -> None:
    host = get_plugin_manager()
    assert "sqlite" in host.registry.names(Kind.CANDLE_STORE)
    registration = host.registration(Kind.CANDLE_STORE, "sqlite")
    assert registration.options is SqliteCandleOptions
    store = registration.build(SqliteCandleOptions(), context)
    assert isinstance(store, SqliteCandleStore)
    assert store.path == context.data_dir / "candles.sqlite"


def test_columns_read_back_are_writable_arrays(factory: Callable[[], SqliteCandleStore]) -> None:
    async def scenario(store: CandleStore) -> CandleArrays:
        await store.write(SERIES, make_candles([T0, T0 + M]))
        return await store.read(SERIES)

    candles = run_with_store(factory, scenario)
    for column in CandleArrays.COLUMNS:
        array = getattr(candles, column)
        assert array.flags.writeable, f"{column} is read-only"
    assert candles.time.dtype == np.int64 and candles.closed.dtype == np.bool_


def test_times_after_the_year_9999_are_refused_and_the_last_one_reads_back(
    factory: Callable[[], SqliteCandleStore],
) -> None:
    last_open = Timeframe.parse("1m").floor(MAX_TIME_MS)  # 9999-12-31T23:59Z

    async def scenario(store: CandleStore) -> None:
        for late in (9_007_199_254_740_960_000, 2**53 + 60_000 * 2**20):
            batch = make_candles([T0, late - late % M])
            with pytest.raises(ModelError, match=r"after the year 9999.*nothing was written"):
                await store.write(SERIES, batch)
        assert len(await store.read(SERIES)) == 0
        assert await store.list_series() == []
        edge = make_candles([T0, last_open])
        assert await store.write(SERIES, edge) == WriteResult(inserted=2)
        assert_same_candles(await store.read(SERIES), edge, "up to the last minute of 9999")
        assert_same_candles(await store.read(SERIES, last_open), edge.slice(1, 2), "from it")
        assert_same_candles(await store.latest(SERIES, 1), edge.slice(1, 2), "latest")
        assert await store.gaps(SERIES, last_open, None) == []
        assert await store.delete(SERIES, last_open) == 1

    run_with_store(factory, scenario)


def test_resample_widens_bounds_to_whole_target_candles(
    factory: Callable[[], SqliteCandleStore],
) -> None:
    candles = make_candles([T0 + i * M for i in range(120)])
    hourly = Timeframe.parse("1h")

    async def scenario(store: CandleStore) -> None:
        await store.write(SERIES, candles)
        whole = await store.resample(SERIES, hourly)
        assert whole is not None and len(whole) == 2
        cut = await store.resample(SERIES, hourly, T0 + 30 * M, T0 + 61 * M)
        assert cut is not None
        assert_same_candles(cut, whole, "bounds inside the first and second hours")
        assert float(cut.open[0]) == float(candles.open[0])

    run_with_store(factory, scenario)
