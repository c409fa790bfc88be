"""The timescale stores pass the sdk's conformance suites against a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from trader.interfaces import PluginContext
from trader_sdk.testing.candle_store import CandleStoreConformance, CandleStoreFactory
from trader_sdk.testing.postgres import PostgresDatabase
from trader_sdk.testing.pytest_plugin import TEST_SECRET_KEY
from trader_sdk.testing.state_store import (
    KeyedStoreFactory,
    RawDump,
    StateStoreConformance,
    StoreFactory,
)
from trader_storage_timescale.candles import TimescaleCandleOptions, TimescaleCandleStore
from trader_storage_timescale.state import TimescaleStateOptions, TimescaleStateStore


def _context(tmp_path: Path, key: str | None = TEST_SECRET_KEY) -> PluginContext:
    settings = {} if key is None else {"secret_key": key}
    return PluginContext(data_dir=tmp_path, config_dir=tmp_path, settings=settings)


class TestTimescaleCandleStore(CandleStoreConformance):
    @pytest.fixture
    def candle_store_factory(
        self, postgres_database: PostgresDatabase, tmp_path: Path
    ) -> CandleStoreFactory:
        options = TimescaleCandleOptions(dsn=postgres_database.url, pool_size=2)
        return lambda: TimescaleCandleStore(options, _context(tmp_path))


class TestTimescaleCandleStoreAlwaysStaged(CandleStoreConformance):
    """Every bulk write goes through the staging table, even the first one of a span."""

    @pytest.fixture
    def candle_store_factory(
        self, postgres_database: PostgresDatabase, tmp_path: Path
    ) -> CandleStoreFactory:
        options = TimescaleCandleOptions(
            dsn=postgres_database.dsn, direct_copy=False, copy_threshold=0, pool_size=2
        )
        return lambda: TimescaleCandleStore(options, _context(tmp_path))


class TestTimescaleStateStore(StateStoreConformance):
    @pytest.fixture
    def state_store_factory(
        self, postgres_database: PostgresDatabase, tmp_path: Path
    ) -> StoreFactory:
        options = TimescaleStateOptions(dsn=postgres_database.url, pool_size=2)
        return lambda: TimescaleStateStore(options, _context(tmp_path))

    @pytest.fixture
    def state_store_factory_with_key(
        self, postgres_database: PostgresDatabase, tmp_path: Path
    ) -> KeyedStoreFactory:
        options = TimescaleStateOptions(dsn=postgres_database.url, pool_size=2)
        return lambda key: TimescaleStateStore(options, _context(tmp_path, key))

    @pytest.fixture
    def raw_dump(self, postgres_database: PostgresDatabase) -> RawDump:
        return postgres_database.dump
