"""``trader data migrate``: SQLite to SQLite, interrupted and resumed, verified by checksums."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from trader.cli.main import main
from trader.errors import StorageError
from trader.interfaces import (
    CandleStore,
    Gap,
    PluginContext,
    SeriesInfo,
    StateStore,
    WriteResult,
)
from trader.interfaces.state_store import (
    Assignment,
    Evaluation,
    Report,
    ScheduleRecord,
    TaskRecord,
    TradingAccount,
)
from trader.migrate import (
    Journal,
    MigrateError,
    migrate_candles,
    migrate_state,
    series_checksum,
)
from trader.model import (
    Candle,
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

START = parse_time("2024-01-01")
M1 = SeriesKey("demo", "BTC/USD", Timeframe.parse("1m"))
H1 = SeriesKey("demo", "ETH/USD", Timeframe.parse("1h"))
D1 = SeriesKey("other", "BTC/EUR", Timeframe.parse("1d"))
KEY = "migrate test key, not for production"


@pytest.fixture(autouse=True)
def _data_group_has_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``trader data migrate`` available whether or not the group lists it yet."""
    from trader.cli.data_cmd import data_group
    from trader.cli.migrate_cmd import migrate_command

    monkeypatch.setitem(data_group.commands, "migrate", migrate_command)


def candle_store(path: Path) -> SqliteCandleStore:
    context = PluginContext(data_dir=path.parent, config_dir=path.parent, settings={})
    return SqliteCandleStore(SqliteCandleOptions(path=str(path)), context)


def state_store(path: Path, key: str | None = KEY) -> SqliteStateStore:
    settings = {} if key is None else {"secret_key": key}
    context = PluginContext(data_dir=path.parent, config_dir=path.parent, settings=settings)
    return SqliteStateStore(SqliteStateOptions(path=str(path)), context)


async def fill_candles(store: CandleStore) -> dict[SeriesKey, int]:
    """Three series; the minute one with a hole in the middle."""
    minutes = generate_candles(M1.timeframe, START, 30_000, seed=3)
    keep = np.ones(len(minutes), dtype=bool)
    keep[10_000:12_500] = False
    await store.write(M1, CandleArrays(*(getattr(minutes, c)[keep] for c in CandleArrays.COLUMNS)))
    await store.write(H1, generate_candles(H1.timeframe, START, 2_000, seed=4))
    await store.write(D1, generate_candles(D1.timeframe, START, 300, seed=5))
    return {M1: int(keep.sum()), H1: 2_000, D1: 300}


class FailingStore(CandleStore):
    """A real store that fails (as a lost connection would) after ``writes`` successful writes."""

    def __init__(self, inner: CandleStore, writes: int) -> None:
        self.inner = inner
        self.left = writes

    async def write(
        self, series: SeriesKey, candles: CandleArrays | Sequence[Candle]
    ) -> WriteResult:
        if self.left == 0:
            raise StorageError("test store: connection lost")
        self.left -= 1
        return await self.inner.write(series, candles)

    async def read(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> CandleArrays:
        return await self.inner.read(series, start, end)

    async def latest(self, series: SeriesKey, count: int) -> CandleArrays:
        return await self.inner.latest(series, count)

    async def list_series(self) -> list[SeriesInfo]:
        return await self.inner.list_series()

    async def gaps(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> list[Gap]:
        return await self.inner.gaps(series, start, end)

    async def delete(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> int:
        return await self.inner.delete(series, start, end)


def test_an_interrupted_candle_copy_resumes_where_it_stopped_and_verifies(tmp_path: Path) -> None:
    async def run() -> None:
        async with candle_store(tmp_path / "a.sqlite") as source:
            counts = await fill_candles(source)
            total = sum(counts.values())
            journal_path = tmp_path / "journal.json"
            async with candle_store(tmp_path / "b.sqlite") as target:
                seen: list[int] = []
                with pytest.raises(StorageError, match="connection lost"):
                    await migrate_candles(
                        source,
                        FailingStore(target, writes=4),
                        Journal(journal_path),
                        chunk=4_000,
                        progress=seen.append,
                    )
                # Four chunks of the minute series are in, and the journal says exactly that.
                recorded = json.loads(journal_path.read_text())["series"]
                assert list(recorded) == [str(M1)]
                copied = len(await target.read(M1))
                assert copied == 4 * 4_000 - 2_500  # less the hole
                next_time = recorded[str(M1)]["next"]
                assert next_time == START + 4 * 4_000 * 60_000
                assert len(await target.read(M1, None, next_time)) == copied
                assert seen[-1] == copied

            # A new run (a new process would do the same: the journal is a file) resumes.
            async with candle_store(tmp_path / "b.sqlite") as target:
                progress: list[int] = []
                report = await migrate_candles(
                    source, target, Journal(journal_path), chunk=4_000, progress=progress.append
                )
                assert report.skipped == copied
                assert report.copied == total - copied
                assert progress[-1] == total
                assert report.ok
                assert [check.key for check in report.checks] == [M1, H1, D1]
                for check in report.checks:
                    assert check.source_count == check.target_count == counts[check.key]
                    assert check.source_checksum == check.target_checksum
                for key in counts:
                    assert await target.read(key) == await source.read(key)

    asyncio.run(run())


async def fill_state(store: StateStore) -> None:
    """One or more of every entity, with a deleted assignment's evaluations and task history."""
    t0 = START
    await store.add_user("ada")
    await store.add_user("bob")
    for source in ("return 1", "return 2", "return 3"):
        await store.save_strategy("sma", "lua", source)
    await store.save_strategy("rsi", "python", "def f(): pass")
    await store.save_account(
        TradingAccount("main", "demo", {"sub": "x"}, {"api_key": "k1", "api_secret": "s1"})
    )
    await store.save_account(TradingAccount("paper", "paper"))
    for index, enabled in ((1, True), (2, False), (3, True)):
        await store.save_assignment(
            Assignment(
                f"a{index}",
                "sma",
                "main",
                "BTC/USD",
                "1h",
                Decimal("0.25"),
                {"n": index},
                strategy_version=2 if index == 1 else None,
                enabled=enabled,
            )
        )
    order = Order(
        "o1",
        "demo",
        "BTC/USD",
        OrderSide.BUY,
        OrderType.LIMIT,
        Decimal("0.5"),
        price=Decimal("100.125"),
        created_at=t0,
        updated_at=t0,
        assignment="a1",
    )
    await store.save_order(order)
    await store.save_order(
        Order(
            "o2",
            "demo",
            "BTC/USD",
            OrderSide.SELL,
            OrderType.MARKET,
            Decimal("1"),
            status=OrderStatus.FILLED,
            filled=Decimal("1"),
            created_at=t0 + 1,
            updated_at=t0 + 2,
        )
    )
    for index in range(3):
        await store.add_fill(
            Fill(
                f"f{index}",
                "o2",
                "demo",
                "BTC/USD",
                OrderSide.SELL,
                Decimal("0.25"),
                Decimal("99.5"),
                Decimal("0.001"),
                "USD",
                t0 + 10 + index,
            )
        )
    await store.create_task(TaskRecord("t1", "backtest", "broker", "queued", {"x": 1}, t0, t0))
    await store.record_transition("t1", "queued", "running", "start", t0 + 5, owner="w1")
    await store.record_transition(
        "t1", "running", "done", "finish", t0 + 9, final=True, note="ok", payload={"x": 2}
    )
    await store.create_task(TaskRecord("t2", "report", "broker", "queued", {}, t0 + 1, t0 + 1))
    for assignment_id in ("a1", "a2", "a9"):
        for minute in range(4):
            await store.add_evaluation(
                Evaluation(assignment_id, t0 + minute * 60_000, {"action": "hold"}, 120)
            )
    await store.save_schedule(ScheduleRecord("daily", "cron", {"cron": "0 0 * * *"}, t0))
    await store.save_report(Report("r1", "daily", t0, b"\x00binary\xff", {"pages": 1}))
    await store.delete_assignment("a3")  # evaluations of a9 belong to no assignment at all


async def state_snapshot(store: StateStore) -> dict[str, object]:
    """Everything a state store holds, as the interface shows it."""
    strategies = []
    for newest in await store.list_strategies():
        for version in range(1, newest.version + 1):
            found = await store.get_strategy(newest.name, version)
            assert found is not None
            strategies.append(found)
    tasks = await store.list_tasks()
    ada = await store.get_user("ada")
    return {
        "users": ada,
        "strategies": strategies,
        "accounts": await store.list_accounts(),
        "assignments": await store.list_assignments(),
        "orders": await store.list_orders(),
        "fills": await store.list_fills(),
        "tasks": tasks,
        "history": [await store.task_history(task.task_id) for task in tasks],
        "evaluations": [await store.list_evaluations(a) for a in ("a1", "a2", "a9")],
        "schedules": await store.list_schedules(),
        "reports": await store.list_reports(),
    }


def test_state_copies_every_entity_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    async def run() -> None:
        async with state_store(tmp_path / "a.sqlite") as source:
            await fill_state(source)
            expected = await state_snapshot(source)
            async with state_store(tmp_path / "b.sqlite") as target:
                report = await migrate_state(source, target)
                assert report.ok, report.counts
                counts = {count.entity: count.target for count in report.counts}
                assert counts == {
                    "users": 2,
                    "strategy versions": 4,
                    "accounts": 2,
                    "assignments": 2,
                    "orders": 2,
                    "fills": 3,
                    "tasks": 2,
                    "task transitions": 2,
                    "evaluations": 12,
                    "schedules": 1,
                    "reports": 1,
                }
                assert await state_snapshot(target) == expected
                again = await migrate_state(source, target)
                assert again.ok
                assert again.written["users"] == again.written["strategy versions"] == 0
                assert again.written["tasks"] == again.written["task transitions"] == 0
                assert again.written["fills"] == 0
                assert await state_snapshot(target) == expected

    asyncio.run(run())


def test_an_interrupted_task_history_is_completed_on_the_next_run(tmp_path: Path) -> None:
    async def run() -> None:
        async with state_store(tmp_path / "a.sqlite") as source:
            await fill_state(source)
            async with state_store(tmp_path / "b.sqlite") as target:
                # As if the previous run stopped after the first step of t1.
                await target.create_task(
                    TaskRecord("t1", "backtest", "broker", "queued", {"x": 2}, START, START)
                )
                await target.record_transition("t1", "queued", "running", "start", START + 5)
                report = await migrate_state(source, target)
                assert report.ok
                assert report.written["task transitions"] == 1
                assert await target.task_history("t1") == await source.task_history("t1")
                assert await target.get_task("t1") == await source.get_task("t1")

    asyncio.run(run())


def write_config(folder: Path, key_env: str | None = "MIGRATE_KEY") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = f'secret_key = "${{{key_env}}}"\n' if key_env else ""
    path = folder / "trader.toml"
    path.write_text(
        f"[storage]\n{key}"
        '[storage.candles]\nplugin = "sqlite"\npath = "c.sqlite"\n'
        '[storage.state]\nplugin = "sqlite"\npath = "s.sqlite"\n'
    )
    return path


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def row(output: str, first: str) -> list[str]:
    """The cells of the table line that starts with ``first``."""
    lines = [line for line in output.splitlines() if line.startswith(first)]
    assert len(lines) == 1, output
    return lines[0].split()


def populate(folder: Path) -> dict[SeriesKey, int]:
    async def run() -> dict[SeriesKey, int]:
        async with state_store(folder / "s.sqlite") as state:
            await fill_state(state)
        async with candle_store(folder / "c.sqlite") as candles:
            return await fill_candles(candles)

    return asyncio.run(run())


def test_cli_copies_candles_and_state_and_prints_the_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATE_KEY", KEY)
    source = write_config(tmp_path / "old")
    target = write_config(tmp_path / "new")
    counts = populate(tmp_path / "old")
    command = ["data", "migrate", "--from", str(source), "--to", str(target), "--chunk", "7000"]

    status, out, err = run_main(capsys, *command)
    assert status == 0, err
    assert f"copied {sum(counts.values()):,} in this run" in out
    assert row(out, "demo:BTC/USD:1m")[1:3] == ["27,500", "27,500"]
    assert row(out, "demo:BTC/USD:1m")[4] == "ok"
    assert row(out, "other:BTC/EUR:1d")[1:] == ["300", "300", row(out, "other:BTC/EUR:1d")[3], "ok"]
    assert "MISMATCH" not in out
    assert row(out, "evaluations") == ["evaluations", "12", "12", "ok"]
    assert row(out, "strategy") == ["strategy", "versions", "4", "4", "ok"]
    assert "copying candles: done" in err
    assert "verifying candles: done" in err

    status, out, err = run_main(capsys, *command)
    assert status == 0, err
    assert "resuming from journal" in err
    assert f"copied 0 in this run, {sum(counts.values()):,} copied before" in out

    async def check() -> None:
        old, new = tmp_path / "old", tmp_path / "new"
        async with candle_store(old / "c.sqlite") as a, candle_store(new / "c.sqlite") as b:
            for key in counts:
                assert await b.read(key) == await a.read(key)
        async with state_store(old / "s.sqlite") as c, state_store(new / "s.sqlite") as d:
            assert await state_snapshot(d) == await state_snapshot(c)

    asyncio.run(check())


def test_cli_reports_a_mismatch_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATE_KEY", KEY)
    source = write_config(tmp_path / "old")
    target = write_config(tmp_path / "new")
    populate(tmp_path / "old")

    async def extra() -> None:
        async with candle_store(tmp_path / "new" / "c.sqlite") as new:
            # A candle the source does not have, before its first one.
            await new.write(D1, generate_candles(D1.timeframe, START - 86_400_000, 1, seed=9))

    asyncio.run(extra())
    status, out, err = run_main(
        capsys, "data", "migrate", "--from", str(source), "--to", str(target), "--no-state"
    )
    assert status == 1
    assert row(out, "other:BTC/EUR:1d") == ["other:BTC/EUR:1d", "300", "301", "differs", "MISMATCH"]
    assert row(out, "demo:BTC/USD:1m")[-1] == "ok"
    assert "error: 1 item(s) differ between source and target" in err


def test_cli_refuses_to_store_account_secrets_without_a_target_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATE_KEY", KEY)
    source = write_config(tmp_path / "old")
    target = write_config(tmp_path / "new", key_env=None)
    populate(tmp_path / "old")
    status, _out, err = run_main(
        capsys, "data", "migrate", "--from", str(source), "--to", str(target), "--no-candles"
    )
    assert status == 1
    assert "account 'main' has secrets but the target has no secret key" in err
    assert "[storage] secret_key" in err
    assert "s1" not in err and "k1" not in err

    async def nothing_written() -> None:
        async with state_store(tmp_path / "new" / "s.sqlite", key=None) as target_state:
            assert await target_state.list_strategies() == []
            assert await target_state.get_user("ada") is None

    asyncio.run(nothing_written())


def test_migrate_state_says_so_when_the_target_store_cannot_encrypt(tmp_path: Path) -> None:
    async def run() -> None:
        async with state_store(tmp_path / "a.sqlite") as source:
            await fill_state(source)
            async with state_store(tmp_path / "b.sqlite", key=None) as target:
                with pytest.raises(MigrateError, match="give the target configuration a"):
                    await migrate_state(source, target)

    asyncio.run(run())


def test_cli_refuses_the_same_store_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_config(tmp_path / "old", key_env=None)
    status, _out, err = run_main(
        capsys, "data", "migrate", "--from", str(source), "--to", str(source)
    )
    assert status == 1
    assert "--from and --to name the same candles store" in err
    missing = tmp_path / "nope.toml"
    status, _out, err = run_main(capsys, "data", "migrate", "--to", str(missing))
    assert status == 1
    assert f"--to {missing}: no such file" in err


@pytest.mark.parametrize("chunk", [1, 7, 1_000])
def test_the_checksum_does_not_depend_on_the_chunk_size(tmp_path: Path, chunk: int) -> None:
    async def run() -> set[tuple[int, str]]:
        async with candle_store(tmp_path / "a.sqlite") as store:
            await fill_candles(store)
            info = next(i for i in await store.list_series() if i.key == D1)
            return {await series_checksum(store, info, size) for size in (chunk, 100_000)}

    sums = asyncio.run(run())
    assert len(sums) == 1
    assert next(iter(sums))[0] == 300


def test_cli_resumes_a_copy_interrupted_part_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run dies after three chunks; ``trader data migrate`` picks up from its journal."""
    from trader.cli.migrate_cmd import journal_identity
    from trader.config import load_config

    monkeypatch.setenv("MIGRATE_KEY", KEY)
    source = write_config(tmp_path / "old")
    target = write_config(tmp_path / "new")
    counts = populate(tmp_path / "old")
    journal_path = tmp_path / "journal.json"
    identity = journal_identity(load_config(source), load_config(target))

    async def interrupted() -> None:
        old, new = tmp_path / "old" / "c.sqlite", tmp_path / "new" / "c.sqlite"
        async with candle_store(old) as reader, candle_store(new) as writer:
            with pytest.raises(StorageError):
                await migrate_candles(
                    reader,
                    FailingStore(writer, writes=3),
                    Journal(journal_path, identity),
                    chunk=5_000,
                )

    asyncio.run(interrupted())
    command = ["data", "migrate", "--from", str(source), "--to", str(target), "--no-state"]
    status, out, err = run_main(capsys, *command, "--chunk", "5000", "--journal", str(journal_path))
    assert status == 0, err
    assert f"resuming from journal {journal_path}" in err
    total = sum(counts.values())
    before = 15_000 - 2_500  # three chunks of 5,000 minutes, less the hole
    assert f"copied {total - before:,} in this run, {before:,} copied before (journal)" in out
    assert all(row(out, str(key))[-1] == "ok" for key in counts)

    # Another pair of stores cannot use this journal by mistake.
    other = write_config(tmp_path / "other")
    status, _out, err = run_main(
        capsys,
        "data",
        "migrate",
        "--from",
        str(other),
        "--to",
        str(target),
        "--journal",
        str(journal_path),
    )
    assert status == 1
    assert "belongs to another pair of stores" in err
