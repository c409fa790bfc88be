"""``trader data migrate`` round trip: SQLite → PostgreSQL → SQLite, against a real server."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from trader.cli.main import main
from trader.interfaces import PluginContext, StateStore
from trader.interfaces.state_store import (
    Assignment,
    Evaluation,
    Report,
    ScheduleRecord,
    TaskRecord,
    TradingAccount,
)
from trader.model import (
    CandleArrays,
    Fill,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    SeriesKey,
    Timeframe,
)
from trader.state.sqlite import SqliteStateOptions, SqliteStateStore
from trader.stores.sqlite_candles import SqliteCandleOptions, SqliteCandleStore
from trader.synthetic import generate_candles
from trader.timeutil import parse_time
from trader_sdk.testing.postgres import PostgresDatabase

START = parse_time("2024-01-01")
M1 = SeriesKey("demo", "BTC/USD", Timeframe.parse("1m"))
H4 = SeriesKey("demo", "ETH/USD", Timeframe.parse("4h"))
KEY = "timescale migrate test key, not for production"


@pytest.fixture(autouse=True)
def _data_group_has_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``trader data migrate`` available whether or not the group lists it yet."""
    from trader.cli.data_cmd import data_group
    from trader.cli.migrate_cmd import migrate_command

    monkeypatch.setitem(data_group.commands, "migrate", migrate_command)


def _context(folder: Path) -> PluginContext:
    return PluginContext(data_dir=folder, config_dir=folder, settings={"secret_key": KEY})


def _sqlite_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trader.toml"
    path.write_text(
        '[storage]\nsecret_key = "${MIGRATE_KEY}"\n'
        '[storage.candles]\nplugin = "sqlite"\npath = "c.sqlite"\n'
        '[storage.state]\nplugin = "sqlite"\npath = "s.sqlite"\n'
    )
    return path


def _postgres_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trader.toml"
    path.write_text(
        '[storage]\nsecret_key = "${MIGRATE_KEY}"\n'
        '[storage.candles]\nplugin = "timescale"\ndsn = "${PGDSN}"\npool_size = 2\n'
        '[storage.state]\nplugin = "timescale"\ndsn = "${PGDSN}"\npool_size = 2\n'
    )
    return path


async def _fill_state(store: StateStore) -> None:
    await store.add_user("ada")
    await store.save_strategy("sma", "lua", "return 1")
    await store.save_strategy("sma", "lua", "return 2")
    await store.save_account(TradingAccount("main", "demo", {"sub": 1}, {"api_secret": "s3"}))
    await store.save_assignment(
        Assignment("a1", "sma", "main", "BTC/USD", "1h", Decimal("0.5"), {"n": 3})
    )
    await store.save_order(
        Order(
            "o1",
            "demo",
            "BTC/USD",
            OrderSide.BUY,
            OrderType.LIMIT,
            Decimal("0.123456789"),
            price=Decimal("43210.123456789"),
            status=OrderStatus.FILLED,
            filled=Decimal("0.123456789"),
            created_at=START,
            updated_at=START + 1,
            assignment="a1",
        )
    )
    await store.add_fill(
        Fill(
            "f1",
            "o1",
            "demo",
            "BTC/USD",
            OrderSide.BUY,
            Decimal("0.123456789"),
            Decimal("43210.123456789"),
            Decimal("0.0001"),
            "USD",
            START + 1,
        )
    )
    await store.create_task(TaskRecord("t1", "backtest", "broker", "queued", {}, START, START))
    await store.record_transition("t1", "queued", "running", "start", START + 1, owner="w")
    await store.record_transition(
        "t1", "running", "done", "finish", START + 2, final=True, payload={"result": 1}
    )
    await store.add_evaluation(Evaluation("a1", START, {"action": "buy"}, 42))
    await store.add_evaluation(Evaluation("gone", START, {"action": "hold"}, 7))
    await store.save_schedule(ScheduleRecord("hourly", "interval", {"every": "1h"}))
    await store.save_report(Report("r1", "daily", START, b"\x00\x01", {"k": "v"}))


async def _snapshot(store: StateStore) -> dict[str, object]:
    tasks = await store.list_tasks()
    return {
        "user": await store.get_user("ada"),
        "strategies": [await store.get_strategy("sma", v) for v in (1, 2)],
        "accounts": await store.list_accounts(),
        "assignments": await store.list_assignments(),
        "orders": await store.list_orders(),
        "fills": await store.list_fills(),
        "tasks": tasks,
        "history": [await store.task_history(task.task_id) for task in tasks],
        "evaluations": [await store.list_evaluations(a) for a in ("a1", "gone")],
        "schedules": await store.list_schedules(),
        "reports": await store.list_reports(),
    }


def _row(output: str, first: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith(first + " ")]
    assert len(lines) == 1, output
    return lines[0].split()


def _migrate(capsys: pytest.CaptureFixture[str], source: Path, target: Path) -> str:
    with pytest.raises(SystemExit) as done:
        main(["data", "migrate", "--from", str(source), "--to", str(target), "--chunk", "5000"])
    captured = capsys.readouterr()
    assert done.value.code in (0, None), captured.out + captured.err
    assert "MISMATCH" not in captured.out
    return captured.out


def test_sqlite_to_postgres_to_sqlite_keeps_every_candle_and_entity(
    postgres_database: PostgresDatabase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIGRATE_KEY", KEY)
    monkeypatch.setenv("PGDSN", postgres_database.url)
    first, postgres, back = tmp_path / "first", tmp_path / "pg", tmp_path / "back"
    first_config = _sqlite_config(first)
    postgres_config = _postgres_config(postgres)
    back_config = _sqlite_config(back)

    minutes = generate_candles(M1.timeframe, START, 12_000, seed=11)
    keep = np.ones(len(minutes), dtype=bool)
    keep[3_000:3_100] = False  # a hole
    minutes = CandleArrays(*(getattr(minutes, c)[keep] for c in CandleArrays.COLUMNS))
    minutes.closed[-1] = False  # the live candle
    bars = generate_candles(H4.timeframe, START, 500, seed=12)

    async def fill() -> None:
        async with SqliteCandleStore(
            SqliteCandleOptions(path=str(first / "c.sqlite")), _context(first)
        ) as candles:
            await candles.write(M1, minutes)
            await candles.write(H4, bars)
        async with SqliteStateStore(
            SqliteStateOptions(path=str(first / "s.sqlite")), _context(first)
        ) as state:
            await _fill_state(state)

    asyncio.run(fill())

    there = _migrate(capsys, first_config, postgres_config)
    assert "copied 12,400 in this run" in there
    back_again = _migrate(capsys, postgres_config, back_config)
    assert "copied 12,400 in this run" in back_again
    # Each series has the same count and checksum in all three stores.
    for key, count in ((M1, "11,900"), (H4, "500")):
        row_there, row_back = _row(there, str(key)), _row(back_again, str(key))
        assert row_there == row_back
        assert row_there[1:3] == [count, count]
        assert row_there[4] == "ok"
    for entity in ("users", "accounts", "evaluations", "fills"):
        assert _row(back_again, entity)[-1] == "ok"

    async def compare() -> None:
        async with (
            SqliteCandleStore(
                SqliteCandleOptions(path=str(first / "c.sqlite")), _context(first)
            ) as a,
            SqliteCandleStore(
                SqliteCandleOptions(path=str(back / "c.sqlite")), _context(back)
            ) as b,
        ):
            assert await b.read(M1) == await a.read(M1)
            assert await b.read(H4) == await a.read(H4)
            assert [(i.key, i.count) for i in await b.list_series()] == [(M1, 11_900), (H4, 500)]
        async with (
            SqliteStateStore(
                SqliteStateOptions(path=str(first / "s.sqlite")), _context(first)
            ) as c,
            SqliteStateStore(SqliteStateOptions(path=str(back / "s.sqlite")), _context(back)) as d,
        ):
            assert await _snapshot(d) == await _snapshot(c)

    asyncio.run(compare())
