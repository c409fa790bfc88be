"""Options, configuration, secrets and messages of the timescale stores."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from trader.app import open_candle_store, open_state_store
from trader.config import load_config
from trader.config.secrets import SecretRef
from trader.errors import ConfigError, StorageError
from trader.interfaces import PluginContext, WriteResult
from trader.model import MAX_TIME_MS, CandleArrays, SeriesKey, Timeframe
from trader.plugins import get_plugin_manager
from trader_sdk.testing.postgres import PostgresDatabase
from trader_storage_timescale.candles import TimescaleCandleOptions, TimescaleCandleStore
from trader_storage_timescale.connection import Server

PASSWORD = "s3cret-Passw0rd"
MINUTE = SeriesKey("options", "BTC/USDT", Timeframe.parse("1m"))


def _context(tmp_path: Path) -> PluginContext:
    return PluginContext(data_dir=tmp_path, config_dir=tmp_path)


def test_a_url_and_a_libpq_string_resolve_alike() -> None:
    url = Server.from_options(
        TimescaleCandleOptions(dsn="postgresql+psycopg://trader:pw@db.example:6543/prices"), "x"
    )
    keywords = Server.from_options(
        TimescaleCandleOptions(dsn="host=db.example port=6543 user=trader dbname=prices"), "x"
    )
    assert url.label == keywords.label == "trader@db.example:6543/prices"
    assert url.password == "pw" and keywords.password is None
    assert "pw" not in url.label
    assert (
        url.url()
        .render_as_string(hide_password=True)
        .startswith("postgresql+psycopg://trader:***@db.example:6543/prices")
    )


def test_a_dsn_may_be_a_secret_reference_and_the_password_too(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    options = TimescaleCandleOptions.model_validate(
        {"dsn": "${PG_DSN}", "password": f"file:{secret}"},
        context={"environ": {"PG_DSN": "postgresql://trader@db.example/prices"}},
    )
    assert isinstance(options.dsn, SecretRef)
    assert PASSWORD not in repr(options)
    server = Server.from_options(options, "x")
    assert server.password == PASSWORD
    assert server.label == "trader@db.example:5432/prices"


def test_a_literal_password_option_is_refused_without_being_repeated() -> None:
    with pytest.raises(ValueError, match="literal secrets are not allowed") as caught:
        TimescaleCandleOptions.model_validate({"dsn": "host=x", "password": PASSWORD})
    assert PASSWORD not in str(caught.value)


def test_trader_toml_refuses_a_literal_password_without_repeating_it(tmp_path: Path) -> None:
    (tmp_path / "trader.toml").write_text(
        f'[storage.candles]\nplugin = "timescale"\ndsn = "host=x"\npassword = "{PASSWORD}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "trader.toml", environ={}, host=get_plugin_manager())
    assert "storage.candles.password" in str(caught.value)
    assert "literal secrets are not allowed" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_malformed_dsn_names_the_problem_and_masks_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Server.from_options(
            TimescaleCandleOptions(dsn=f"host=x password={PASSWORD} bogus"), "candles"
        )
    message = str(caught.value)
    assert "dsn is not a PostgreSQL connection string" in message
    assert PASSWORD not in message


def test_an_unreachable_server_fails_clearly_without_the_password(tmp_path: Path) -> None:
    options = TimescaleCandleOptions(
        dsn=f"postgresql://trader:{PASSWORD}@127.0.0.1:9/prices",
        reconnect_timeout_s=0,
        connect_timeout_s=2,
    )
    store = TimescaleCandleStore(options, _context(tmp_path))
    with pytest.raises(StorageError) as caught:
        asyncio.run(store.open())
    message = str(caught.value)
    assert message.startswith("timescale candle store trader@127.0.0.1:9/prices: open failed")
    assert "unreachable or restarting" in message
    assert PASSWORD not in message and PASSWORD not in repr(store)


def test_open_logs_which_mode_is_used(
    postgres_database: PostgresDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = postgres_database.dsn + f" password={PASSWORD}"
    store = TimescaleCandleStore(TimescaleCandleOptions(dsn=dsn), _context(tmp_path))

    async def scenario() -> None:
        async with store:
            pass

    with caplog.at_level(logging.INFO, logger="trader_storage_timescale"):
        asyncio.run(scenario())
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1, lines
    assert "plain PostgreSQL mode (native range partitions of 30 days" in lines[0]
    assert "timescaledb extension is not available" in lines[0]
    assert PASSWORD not in lines[0]


def test_partitions_follow_the_data_from_1970_to_the_year_9999(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    options = TimescaleCandleOptions(dsn=postgres_database.url, chunk_days=7)
    times = np.array([0, 60_000, 1_700_000_040_000, MAX_TIME_MS - 59_999], dtype=np.int64)
    candles = CandleArrays(times, [1.0] * 4, [2.0] * 4, [0.5] * 4, [1.5] * 4, [3.0] * 4)

    async def scenario() -> None:
        async with TimescaleCandleStore(options, _context(tmp_path)) as store:
            assert await store.write(MINUTE, candles) == WriteResult(inserted=4)
            got = await store.read(MINUTE)
            assert got.time.tolist() == times.tolist()
            assert (await store.read(MINUTE, MAX_TIME_MS - 59_999, None)).time.tolist() == [
                MAX_TIME_MS - 59_999
            ]
            assert (await store.latest(MINUTE, 1)).time.tolist() == [MAX_TIME_MS - 59_999]

    asyncio.run(scenario())
    partitions = postgres_database.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'candles'::regclass"
    )
    assert partitions.strip() == "3"  # 0 and 60 000 share the first week


def test_a_schema_newer_than_the_plugin_is_refused(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    postgres_database.execute(
        "CREATE TABLE candle_store_version (version integer NOT NULL); "
        "INSERT INTO candle_store_version VALUES (99)"
    )
    store = TimescaleCandleStore(
        TimescaleCandleOptions(dsn=postgres_database.url), _context(tmp_path)
    )
    with pytest.raises(StorageError, match="candle schema version 99, newer than"):
        asyncio.run(store.open())


def test_trader_toml_selects_both_stores_by_plugin_name(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    (tmp_path / "trader.toml").write_text(
        '[storage]\nsecret_key = "${SECRET_KEY}"\n'
        '[storage.candles]\nplugin = "timescale"\ndsn = "${PG_DSN}"\nchunk_days = 14\n'
        '[storage.state]\nplugin = "timescale"\ndsn = "${PG_DSN}"\npassword = "${PG_PASSWORD}"\n'
    )
    environ = {
        "PG_DSN": postgres_database.url,
        "PG_PASSWORD": PASSWORD,
        "SECRET_KEY": "a test key",
        "TRADER_HOME": str(tmp_path / "home"),
    }
    host = get_plugin_manager()
    config = load_config(tmp_path / "trader.toml", environ=environ, host=host)

    async def scenario() -> None:
        async with open_candle_store(config, host) as candles:
            assert isinstance(candles, TimescaleCandleStore)
            data = CandleArrays([0, 60_000], [1.0, 1.0], [2.0, 2.0], [0.5, 0.5], [1.0, 1.0], [1, 1])
            assert await candles.write(MINUTE, data) == WriteResult(inserted=2)
        async with open_state_store(config, host) as state:
            user = await state.add_user("alice")
            assert (await state.get_user("alice")) == user

    asyncio.run(scenario())
    meta = postgres_database.execute("SELECT key, value FROM candle_store_meta ORDER BY key")
    assert meta.split() == ["chunk_days|14", "mode|plain"]


def test_timescaledb_mode_without_the_extension_fails_clearly(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    options = TimescaleCandleOptions(dsn=postgres_database.url, mode="timescaledb")
    store = TimescaleCandleStore(options, _context(tmp_path))
    with pytest.raises(StorageError, match="mode is 'timescaledb' but the timescaledb extension"):
        asyncio.run(store.open())


def test_plain_mode_as_configured_is_logged(
    postgres_database: PostgresDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = TimescaleCandleOptions(dsn=postgres_database.url, mode="plain")

    async def scenario() -> None:
        async with TimescaleCandleStore(options, _context(tmp_path)) as store:
            assert store.mode == "plain"

    with caplog.at_level(logging.INFO, logger="trader_storage_timescale"):
        asyncio.run(scenario())
    assert [record.getMessage().split(": ", 1)[1] for record in caplog.records] == [
        "plain PostgreSQL mode (native range partitions of 30 days, date_bin resampling): "
        "as configured"
    ]
