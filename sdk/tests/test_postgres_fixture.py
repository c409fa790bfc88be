"""The throwaway PostgreSQL fixtures: a real server, a fresh database per test, clean-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from trader_sdk.testing import postgres
from trader_sdk.testing.postgres import (
    PostgresCluster,
    PostgresDatabase,
    PostgresUnavailable,
)


def test_each_test_gets_a_fresh_empty_database(postgres_database: PostgresDatabase) -> None:
    tables = postgres_database.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
        "'information_schema')"
    )
    assert tables.strip() == "0"
    postgres_database.execute("CREATE TABLE probe (id int PRIMARY KEY)")
    postgres_database.execute("INSERT INTO probe VALUES (1), (2)")
    assert postgres_database.execute("SELECT count(*) FROM probe").strip() == "2"


def test_a_second_test_does_not_see_the_first_ones_tables(
    postgres_database: PostgresDatabase,
) -> None:
    postgres_database.execute("CREATE TABLE probe (id int PRIMARY KEY)")
    assert postgres_database.execute("SELECT count(*) FROM probe").strip() == "0"


def test_a_dump_holds_the_rows(postgres_database: PostgresDatabase) -> None:
    postgres_database.execute("CREATE TABLE probe (note text); INSERT INTO probe VALUES ('hello')")
    dump = postgres_database.dump()
    assert b"COPY public.probe (note) FROM stdin;" in dump
    assert b"hello" in dump


def test_databases_are_created_and_dropped(postgres_cluster: PostgresCluster) -> None:
    name = postgres_cluster.create_database()
    listed = postgres_cluster.execute("SELECT datname FROM pg_database").split()
    assert name in listed
    postgres_cluster.drop_database(name)
    assert name not in postgres_cluster.execute("SELECT datname FROM pg_database").split()


def test_the_dsn_and_url_reach_the_database(postgres_database: PostgresDatabase) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_database.dsn) as connection:
        row = connection.execute("SELECT current_database(), current_setting('fsync')").fetchone()
    assert row == (postgres_database.name, "off")
    assert postgres_database.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert postgres_database.url.endswith(f"/{postgres_database.name}")


def test_a_killed_server_restarts_with_committed_data(tmp_path: Path) -> None:
    try:
        cluster = PostgresCluster.start_new()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL unavailable: {error}")
    with cluster:
        folder = cluster.folder
        cluster.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")
        pid = cluster.postmaster_pid()
        assert pid is not None and cluster.running
        cluster.kill()
        assert not cluster.running
        assert not postgres._alive(pid)
        cluster.start()
        assert cluster.running
        assert cluster.execute("SELECT id FROM kept").strip() == "7"
    assert not folder.exists(), "the cluster's folder outlived it"
    assert cluster.postmaster_pid() is None


def test_missing_binaries_give_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "find_postgres_bindir", lambda: None)
    with pytest.raises(PostgresUnavailable, match="no PostgreSQL server binaries found"):
        PostgresCluster.start_new()


def test_a_failing_start_removes_its_folder(tmp_path: Path) -> None:
    bindir = postgres.find_postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL unavailable: no server binaries installed")
    before = set(Path("/tmp").glob("trader-pg-*"))
    with pytest.raises(PostgresUnavailable, match="no_such_setting"):
        PostgresCluster.start_new(settings={"no_such_setting": "1"}, bindir=bindir)
    assert set(Path("/tmp").glob("trader-pg-*")) == before
