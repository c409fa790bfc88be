"""The SQLite state store: the conformance suite, plus what is particular to SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect

from trader.errors import StorageError
from trader.interfaces import PluginContext, StateStore, TradingAccount
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader.state.migrations import VERSION_TABLE, head_revision
from trader.state.schema import metadata
from trader.state.sqlite import SqliteStateOptions, SqliteStateStore
from trader_sdk.testing.state_store import (
    KeyedStoreFactory,
    RawDump,
    StateStoreConformance,
    StoreFactory,
)

SECRET_KEY = "correct horse battery staple"


def _context(root: Path, secret_key: str | None = SECRET_KEY) -> PluginContext:
    settings = {} if secret_key is None else {"secret_key": secret_key}
    return PluginContext(data_dir=root / "data", config_dir=root, settings=settings)


def _store(root: Path, secret_key: str | None = SECRET_KEY, **options: object) -> SqliteStateStore:
    return SqliteStateStore(SqliteStateOptions.model_validate(options), _context(root, secret_key))


def _run(store: StateStore, scenario: Callable[[StateStore], object]) -> object:
    async def main() -> object:
        async with store:
            result = scenario(store)
            if asyncio.iscoroutine(result):
                return await result
            return result

    return asyncio.run(main())


class TestSqliteStateStoreConformance(StateStoreConformance):
    @pytest.fixture
    def state_store_factory(self, tmp_path: Path) -> StoreFactory:
        return lambda: _store(tmp_path)

    @pytest.fixture
    def state_store_factory_with_key(self, tmp_path: Path) -> KeyedStoreFactory:
        return lambda key: _store(tmp_path, key)

    @pytest.fixture
    def raw_dump(self, tmp_path: Path) -> RawDump:
        def dump() -> bytes:
            files = sorted((tmp_path / "data").glob("state.sqlite*"))
            assert files, "no database file was written"
            return b"".join(path.read_bytes() for path in files)

        return dump


def test_default_path_is_state_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.path == tmp_path / "data" / "state.sqlite"
    _run(store, lambda s: None)
    assert store.path.is_file()


def test_relative_path_resolves_against_the_config_dir(tmp_path: Path) -> None:
    store = _store(tmp_path, path="db/app-state.db")
    assert store.path == tmp_path / "db" / "app-state.db"
    _run(store, lambda s: None)
    assert store.path.is_file()


def test_options_reject_unknown_keys() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SqliteStateOptions.model_validate({"pth": "x.sqlite"})


def test_the_plugin_registers_the_sqlite_state_store(tmp_path: Path) -> None:
    from trader.plugins import PluginHost

    host = get_plugin_manager()
    assert isinstance(host, PluginHost)
    registration = host.registration(Kind.STATE_STORE, "sqlite")
    assert registration.options is SqliteStateOptions
    store = registration.build(SqliteStateOptions(), _context(tmp_path))
    assert isinstance(store, SqliteStateStore)


def test_the_file_is_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def pragmas(s: StateStore) -> tuple[str, int]:
        assert isinstance(s, SqliteStateStore)
        with s.engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
        return mode, keys

    assert _run(store, pragmas) == ("wal", 1)
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_schema_is_at_the_head_revision_and_matches_the_tables(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _run(store, lambda s: None)
    engine = create_engine(f"sqlite:///{store.path}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, metadata) == []
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert tables == {*metadata.tables, VERSION_TABLE}


def test_an_empty_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "data" / "state.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")

    async def scenario(store: StateStore) -> None:
        await store.save_strategy("sma", "lua", "return 1")

    _run(_store(tmp_path), scenario)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version_num FROM state_schema_version").fetchall() == [
            (head_revision(),)
        ]


def test_open_twice_and_reopen_do_not_migrate_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trader.state.migrations

    store = _store(tmp_path)
    migrations: list[str] = []
    real_upgrade = trader.state.migrations.upgrade_to_head

    def counting_upgrade(connection: Connection) -> bool:
        migrations.append(str(store.path))
        return real_upgrade(connection)

    monkeypatch.setattr(trader.state.migrations, "upgrade_to_head", counting_upgrade)

    async def twice() -> None:
        await store.open()
        await store.open()
        await store.save_strategy("sma", "lua", "return 1")
        await store.close()
        await store.close()

    asyncio.run(twice())
    assert len(migrations) == 1

    async def read(s: StateStore) -> int:
        got = await s.get_strategy("sma")
        assert got is not None
        return got.version

    assert _run(_store(tmp_path), read) == 1
    assert len(migrations) == 1, "a store at the head revision must not be migrated again"
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("SELECT count(*) FROM state_schema_version").fetchone() == (1,)


def test_a_database_from_a_newer_trader_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _run(store, lambda s: None)
    with sqlite3.connect(store.path) as raw:
        raw.execute("UPDATE state_schema_version SET version_num = 'f00d'")
    with pytest.raises(StorageError, match="newer trader"):
        _run(_store(tmp_path), lambda s: None)


def test_a_file_that_is_not_a_database_gives_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "data" / "state.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StorageError, match=str(path)):
        _run(_store(tmp_path), lambda s: None)


def test_a_folder_as_path_gives_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(StorageError, match="folder"):
        _run(_store(tmp_path, path="folder"), lambda s: None)


def test_calls_on_a_closed_store_give_a_storage_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StorageError, match="not open"):
        asyncio.run(store.get_user("alice"))


def test_secrets_are_not_in_the_file_bytes(tmp_path: Path) -> None:
    secret = "Sup3r-Secret-Value-0123456789"

    async def scenario(store: StateStore) -> None:
        await store.save_account(TradingAccount("main", "bitfinex", {}, {"api_secret": secret}))

    store = _store(tmp_path)
    _run(store, scenario)
    data = b"".join(p.read_bytes() for p in store.path.parent.glob("state.sqlite*"))
    assert b"main" in data and b"bitfinex" in data
    assert secret.encode() not in data and b"api_secret" not in data
    with sqlite3.connect(store.path) as raw:
        (stored,) = raw.execute("SELECT secrets FROM accounts WHERE name = 'main'").fetchone()
    assert isinstance(stored, bytes) and secret.encode() not in stored


def test_a_non_string_secret_key_is_a_config_error(tmp_path: Path) -> None:
    from trader.errors import ConfigError

    context = PluginContext(tmp_path, tmp_path, {"secret_key": 12345})
    with pytest.raises(ConfigError, match="secret_key"):
        SqliteStateStore(SqliteStateOptions(), context)


def test_errors_are_one_line_and_name_the_store_and_operation(tmp_path: Path) -> None:
    async def scenario(store: StateStore) -> str:
        with pytest.raises(StorageError) as caught:
            await store.save_account(TradingAccount("bad", "x", {"value": object()}))
        assert await store.get_account("bad") is None
        return str(caught.value)

    message = _run(_store(tmp_path), scenario)
    assert isinstance(message, str)
    assert "SQLite state store" in message and "save_account" in message
    assert "\n" not in message


def test_stores_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    async def main() -> list[int]:
        stores = [_store(tmp_path) for _ in range(4)]
        await asyncio.gather(*(store.open() for store in stores))
        try:
            saved = await asyncio.gather(
                *(store.save_strategy("sma", "lua", "return 1") for store in stores)
            )
        finally:
            await asyncio.gather(*(store.close() for store in stores))
        return [s.version for s in saved]

    assert asyncio.run(main()) == [1, 1, 1, 1]
    with sqlite3.connect(tmp_path / "data" / "state.sqlite") as raw:
        assert raw.execute("SELECT version_num FROM state_schema_version").fetchall() == [
            (head_revision(),)
        ]


def test_migrations_downgrade_to_nothing_and_upgrade_again(tmp_path: Path) -> None:
    from alembic import command

    from trader.state.migrations import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'migrate.sqlite'}")
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection=connection), "head")
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection=connection), "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {VERSION_TABLE}
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection=connection), "head")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {*metadata.tables, VERSION_TABLE}
    finally:
        engine.dispose()
