"""Copy candles and application state from one store to another (``trader data migrate``).

Candles are copied series by series in time-ordered chunks (:meth:`CandleStore.read` over a
window, then :meth:`CandleStore.write`). After every chunk a small JSON journal records, per
series, the open time up to which everything is copied, so an interrupted migration restarts
where it stopped; writes are idempotent upserts, so copying a chunk twice is harmless. At the
end each series is verified on both sides: the candle count and a SHA-256 checksum over its rows
``(time, open, high, low, close, volume, closed)`` in time order, computed chunk by chunk.

State is copied entity by entity through the :class:`~trader.interfaces.StateStore` interface;
every save is an idempotent upsert (or skipped when already present), so a re-run completes an
interrupted copy. Three things the interface cannot do are done through the shared SQL schema
when both stores are SQL state stores (SQLite, PostgreSQL): listing users (and copying them with
their ids), keeping each strategy version's ``created_at``, and finding evaluations of
assignments that no longer exist. Otherwise they are reported as gaps
(:attr:`StateReport.gaps`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trader.errors import DataError, StorageError
from trader.interfaces import CandleStore, SeriesInfo, StateStore
from trader.interfaces.state_store import TaskRecord
from trader.model import CandleArrays, SeriesKey

#: Candles per chunk by default (about 5 MB of columns).
DEFAULT_CHUNK = 100_000

#: The row layout the checksum is computed over: little-endian, packed, one row per candle.
CHECKSUM_DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),
        ("closed", "u1"),
    ]
)

#: Called with the number of candles copied so far.
ProgressCallback = Callable[[int], None]


class MigrateError(DataError):
    """A migration cannot go on, or its copy does not match its source."""


# ---------------------------------------------------------------------------- journal


class Journal:
    """Which part of each series is copied: a JSON file rewritten atomically after each chunk.

    The file maps a series (``exchange:SYMBOL:tf``) to ``{"next": T}``: every candle with open
    time below ``T`` is in the target. ``path`` ``None`` keeps the journal in memory only.
    """

    VERSION = 1

    def __init__(self, path: Path | None, identity: str = "") -> None:
        self.path = path
        self.identity = identity
        self.series: dict[str, int] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != self.VERSION:
                raise ValueError("unknown version")
            if self.identity and data.get("identity") != self.identity:
                raise MigrateError(
                    f"journal {path} belongs to another pair of stores; pass --restart to "
                    "start over, or another --journal"
                )
            self.series = {str(key): int(value["next"]) for key, value in data["series"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise MigrateError(
                f"cannot read journal {path} ({type(error).__name__}); delete it or pass "
                "--restart to copy everything again"
            ) from None

    def resume_at(self, series: SeriesKey) -> int | None:
        """The open time copying ``series`` resumes at, or ``None`` to start at its beginning."""
        return self.series.get(str(series))

    def record(self, series: SeriesKey, next_time: int) -> None:
        """Record that every candle of ``series`` before ``next_time`` is copied, durably."""
        self.series[str(series)] = next_time
        if self.path is None:
            return
        data = {
            "version": self.VERSION,
            "identity": self.identity,
            "series": {key: {"next": value} for key, value in sorted(self.series.items())},
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w", encoding="utf-8") as file:
                json.dump(data, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            raise MigrateError(
                f"cannot write journal {self.path}: {error.strerror or error}; pass --journal "
                "with a writable path"
            ) from None

    def clear(self) -> None:
        """Forget all progress (and delete the file)."""
        self.series = {}
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- candles


@dataclass(frozen=True, slots=True)
class SeriesCheck:
    """One series verified: counts and checksums on both sides."""

    key: SeriesKey
    source_count: int
    target_count: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        """Whether the target holds exactly the source's candles."""
        return (
            self.source_count == self.target_count and self.source_checksum == self.target_checksum
        )


@dataclass(frozen=True, slots=True)
class CandleReport:
    """What a candle migration did: candles written in this run and every series verified."""

    copied: int
    skipped: int
    checks: list[SeriesCheck]

    @property
    def ok(self) -> bool:
        """Whether every series matches."""
        return all(check.ok for check in self.checks)


def _window(info: SeriesInfo, chunk: int) -> int:
    return max(1, chunk) * info.key.timeframe.nominal_ms


def _windows(info: SeriesInfo, start: int, chunk: int) -> Iterator[tuple[int, int]]:
    """Half-open time windows from ``start`` past the series' last candle."""
    step = _window(info, chunk)
    end_of_series = info.last + 1
    while start < end_of_series:
        yield start, min(start + step, end_of_series)
        start += step


def _rows(candles: CandleArrays) -> bytes:
    rows = np.empty(len(candles), dtype=CHECKSUM_DTYPE)
    for name in CandleArrays.COLUMNS:
        rows[name] = getattr(candles, name)
    return rows.tobytes()


async def series_checksum(
    store: CandleStore, info: SeriesInfo, chunk: int = DEFAULT_CHUNK
) -> tuple[int, str]:
    """Count and hash the candles of a series, reading it in time-ordered chunks.

    The SHA-256 runs over packed little-endian rows ``(time int64, open, high, low, close,
    volume float64, closed uint8)`` oldest first, so it does not depend on the chunk size.
    """
    digest = hashlib.sha256()
    count = 0
    for start, end in _windows(info, info.first, chunk):
        candles = await store.read(info.key, start, end)
        count += len(candles)
        digest.update(_rows(candles))
    return count, digest.hexdigest()


async def copy_candles(
    source: CandleStore,
    target: CandleStore,
    journal: Journal,
    *,
    chunk: int = DEFAULT_CHUNK,
    progress: ProgressCallback | None = None,
    series: Sequence[SeriesKey] | None = None,
) -> tuple[list[SeriesInfo], int, int]:
    """Copy every series of ``source`` (or those in ``series``) into ``target``.

    Resumes each series at the time ``journal`` recorded and records progress after each chunk.
    ``progress`` is called with the number of candles handled so far (skipped ones included),
    out of the sum of the source's series counts. Returns the series copied, the candles copied
    in this call and those skipped because the journal had them.
    """
    infos = await source.list_series()
    if series is not None:
        wanted = set(series)
        infos = [info for info in infos if info.key in wanted]
    done = 0
    copied = 0
    skipped = 0
    for info in infos:
        resume = journal.resume_at(info.key)
        start = info.first if resume is None else max(info.first, resume)
        if start > info.first:
            for window_start, window_end in _windows(info, info.first, chunk):
                if window_start >= start:
                    break
                before = len(await source.read(info.key, window_start, min(window_end, start)))
                skipped += before
                done += before
            if progress is not None:
                progress(done)
        for window_start, window_end in _windows(info, start, chunk):
            candles = await source.read(info.key, window_start, window_end)
            if len(candles):
                await target.write(info.key, candles)
            journal.record(info.key, window_end)
            copied += len(candles)
            done += len(candles)
            if progress is not None:
                progress(done)
    return infos, copied, skipped


async def migrate_candles(
    source: CandleStore,
    target: CandleStore,
    journal: Journal,
    *,
    chunk: int = DEFAULT_CHUNK,
    progress: ProgressCallback | None = None,
    series: Sequence[SeriesKey] | None = None,
) -> CandleReport:
    """Copy (:func:`copy_candles`) and then verify (:func:`verify_candles`) every series.

    Returns the per-series verification; the caller decides what a mismatch means (the CLI
    exits 1).
    """
    infos, copied, skipped = await copy_candles(
        source, target, journal, chunk=chunk, progress=progress, series=series
    )
    checks = await verify_candles(source, target, infos, chunk=chunk)
    return CandleReport(copied, skipped, checks)


async def verify_candles(
    source: CandleStore,
    target: CandleStore,
    infos: Sequence[SeriesInfo],
    *,
    chunk: int = DEFAULT_CHUNK,
    progress: ProgressCallback | None = None,
) -> list[SeriesCheck]:
    """Compare count and checksum of each series in ``infos`` between the two stores.

    ``progress`` is called after each series with the sum of the counts verified so far.
    """
    targets = {info.key: info for info in await target.list_series()}
    checks: list[SeriesCheck] = []
    done = 0
    for info in infos:
        count, checksum = await series_checksum(source, info, chunk)
        other = targets.get(info.key)
        if other is None:
            target_count, target_checksum = 0, hashlib.sha256().hexdigest()
        else:
            # Hash the target over its own extent, so candles outside the source's show.
            target_count, target_checksum = await series_checksum(target, other, chunk)
        checks.append(SeriesCheck(info.key, count, target_count, checksum, target_checksum))
        done += info.count
        if progress is not None:
            progress(done)
    return checks


# ---------------------------------------------------------------------------- state

#: The entities a state migration copies and counts, in copy order.
STATE_ENTITIES = (
    "users",
    "strategy versions",
    "accounts",
    "assignments",
    "orders",
    "fills",
    "tasks",
    "task transitions",
    "evaluations",
    "schedules",
    "reports",
)


@dataclass(frozen=True, slots=True)
class EntityCount:
    """One entity verified: how many the source and the target hold."""

    entity: str
    source: int
    target: int

    @property
    def ok(self) -> bool:
        """Whether the counts match."""
        return self.source == self.target


@dataclass(slots=True)
class StateReport:
    """What a state migration did: rows written per entity, counts compared, gaps."""

    written: dict[str, int] = field(default_factory=dict)
    counts: list[EntityCount] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every entity's counts match."""
        return all(count.ok for count in self.counts)


def _sql_engine(store: StateStore) -> Any:
    """The SQLAlchemy engine of a store built on the shared SQL schema, else ``None``."""
    from trader.state.sql import SqlStateStore

    return store.engine if isinstance(store, SqlStateStore) else None


def _read_rows(engine: Any, statement: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(statement).all())


def _insert_rows(engine: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy import insert

    with engine.begin() as connection:
        connection.execute(insert(table), rows)


async def _sql_rows(store: StateStore, statement: Any) -> list[Any] | None:
    """Run a read on the store's engine in a thread, or ``None`` for a non-SQL store."""
    engine = _sql_engine(store)
    if engine is None:
        return None
    try:
        return await asyncio.to_thread(_read_rows, engine, statement)
    except Exception as error:
        raise StorageError(f"{store!r}: cannot read for migration: {error}") from None


async def _copy_users(source: StateStore, target: StateStore, report: StateReport) -> None:
    from sqlalchemy import select

    from trader.state import schema

    rows = await _sql_rows(source, select(schema.users).order_by(schema.users.c.name))
    engine = _sql_engine(target)
    if rows is None or engine is None:
        report.gaps.append(
            "users: the StateStore interface cannot list users, so they were not copied "
            "(both stores must be SQL state stores)"
        )
        return
    missing: list[dict[str, Any]] = []
    for row in rows:
        existing = await target.get_user(row.name)
        if existing is None:
            missing.append(dict(row._mapping))
        elif existing.user_id != row.user_id:
            raise MigrateError(
                f"user {row.name!r} exists in the target with another id; remove it there "
                "or migrate into an empty state store"
            )
    if missing:
        try:
            await asyncio.to_thread(_insert_rows, engine, schema.users, missing)
        except Exception as error:
            raise StorageError(f"{target!r}: cannot copy users: {error}") from None
    written = len(missing)
    report.written["users"] = written


async def _copy_strategies(source: StateStore, target: StateStore, report: StateReport) -> None:
    from sqlalchemy import select

    from trader.state import schema

    bulk = _sql_engine(source) is not None and _sql_engine(target) is not None
    if not bulk:
        report.gaps.append(
            "strategy versions: copied versions get the time of the copy as created_at (the "
            "StateStore interface cannot set it; both stores must be SQL state stores)"
        )
    written = 0
    for newest in await source.list_strategies():
        present = await target.get_strategy(newest.name)
        have = 0 if present is None else present.version
        if have > newest.version:
            raise MigrateError(
                f"strategy {newest.name!r} has {have} versions in the target but only "
                f"{newest.version} in the source; migrate into an empty state store"
            )
        for version in range(1, newest.version + 1):
            wanted = await source.get_strategy(newest.name, version)
            if wanted is None:
                raise MigrateError(
                    f"strategy {newest.name!r} version {version} is missing in the source"
                )
            if version <= have:
                stored = await target.get_strategy(newest.name, version)
                if stored is None or (stored.language, stored.source) != (
                    wanted.language,
                    wanted.source,
                ):
                    raise MigrateError(
                        f"strategy {newest.name!r} version {version} differs between source and "
                        "target; migrate into an empty state store"
                    )
                continue
            if bulk:
                table = schema.strategies
                query = select(table).where(table.c.name == newest.name, table.c.version >= version)
                rows = await _sql_rows(source, query.order_by(table.c.version))
                assert rows is not None
                try:
                    await asyncio.to_thread(
                        _insert_rows, _sql_engine(target), table, [dict(r._mapping) for r in rows]
                    )
                except Exception as error:
                    raise StorageError(
                        f"{target!r}: cannot copy strategy versions: {error}"
                    ) from None
                written += len(rows)
                break
            saved = await target.save_strategy(wanted.name, wanted.language, wanted.source)
            if saved.version != version:
                raise MigrateError(
                    f"strategy {newest.name!r} version {version} was stored as version "
                    f"{saved.version} in the target; migrate into an empty state store"
                )
            written += 1
    report.written["strategy versions"] = written


async def _copy_accounts(source: StateStore, target: StateStore, report: StateReport) -> None:
    accounts = await source.list_accounts()
    for account in accounts:
        try:
            await target.save_account(account)
        except StorageError as error:
            if account.secrets:
                raise MigrateError(
                    f"cannot store account {account.name!r} with its secrets in the target "
                    f"({error}); give the target configuration a [storage] secret_key"
                ) from None
            raise
    report.written["accounts"] = len(accounts)


async def _copy_tasks(source: StateStore, target: StateStore, report: StateReport) -> None:
    tasks_written = 0
    steps_written = 0
    for task in await source.list_tasks():
        history = await source.task_history(task.task_id)
        present = await target.get_task(task.task_id)
        if present is None:
            first = history[0].source if history else task.state
            await target.create_task(
                TaskRecord(
                    task_id=task.task_id,
                    type=task.type,
                    owner=task.owner,
                    state=first,
                    payload=task.payload,
                    created_at=task.created_at,
                    updated_at=task.created_at if history else task.updated_at,
                    final=False if history else task.final,
                )
            )
            tasks_written += 1
            done: list[Any] = []
        else:
            done = list(await target.task_history(task.task_id))
        mine = [(s.source, s.dest, s.trigger, s.time, s.note) for s in history[: len(done)]]
        theirs = [(s.source, s.dest, s.trigger, s.time, s.note) for s in done]
        if len(done) > len(history) or mine != theirs:
            raise MigrateError(
                f"task {task.task_id} has another history in the target; migrate into an empty "
                "state store"
            )
        for index in range(len(done), len(history)):
            step = history[index]
            last = index == len(history) - 1
            await target.record_transition(
                task.task_id,
                step.source,
                step.dest,
                step.trigger,
                step.time,
                final=task.final if last else False,
                note=step.note,
                payload=task.payload if last else None,
                owner=task.owner if last else None,
            )
            steps_written += 1
    report.written["tasks"] = tasks_written
    report.written["task transitions"] = steps_written


async def _evaluation_ids(store: StateStore) -> tuple[list[str], bool]:
    """Assignment ids that may have evaluations, and whether the list is complete."""
    from sqlalchemy import select

    from trader.state import schema

    ids = {assignment.assignment_id for assignment in await store.list_assignments()}
    rows = await _sql_rows(store, select(schema.evaluations.c.assignment_id).distinct())
    if rows is not None:
        ids.update(row[0] for row in rows)
    return sorted(ids), rows is not None


async def _copy_evaluations(source: StateStore, target: StateStore, report: StateReport) -> None:
    ids, complete = await _evaluation_ids(source)
    if not complete:
        report.gaps.append(
            "evaluations: only those of existing assignments were copied (the StateStore "
            "interface lists evaluations per assignment)"
        )
    written = 0
    for assignment_id in ids:
        for evaluation in await source.list_evaluations(assignment_id):
            await target.add_evaluation(evaluation)
            written += 1
    report.written["evaluations"] = written


async def state_counts(store: StateStore, evaluation_ids: Sequence[str]) -> dict[str, int]:
    """How many of each entity in :data:`STATE_ENTITIES` ``store`` holds (users: ``-1`` when
    they cannot be counted)."""
    from sqlalchemy import func, select

    from trader.state import schema

    users = await _sql_rows(store, select(func.count()).select_from(schema.users))
    strategies = 0
    for newest in await store.list_strategies():
        strategies += newest.version
    tasks = await store.list_tasks()
    transitions = 0
    for task in tasks:
        transitions += len(await store.task_history(task.task_id))
    evaluations = 0
    for assignment_id in evaluation_ids:
        evaluations += len(await store.list_evaluations(assignment_id))
    return {
        "users": -1 if users is None else int(users[0][0]),
        "strategy versions": strategies,
        "accounts": len(await store.list_accounts()),
        "assignments": len(await store.list_assignments()),
        "orders": len(await store.list_orders()),
        "fills": len(await store.list_fills()),
        "tasks": len(tasks),
        "task transitions": transitions,
        "evaluations": evaluations,
        "schedules": len(await store.list_schedules()),
        "reports": len(await store.list_reports()),
    }


async def migrate_state(
    source: StateStore, target: StateStore, *, target_has_key: bool | None = None
) -> StateReport:
    """Copy every entity of ``source`` into ``target`` and compare counts per entity.

    Idempotent: running it again (after an interruption, or after it finished) writes only what
    is missing or changed. Raises :class:`MigrateError` when the target holds conflicting data
    (another strategy history, another task history, a user name with another id) or cannot
    store account secrets (it has no secret key). With ``target_has_key`` ``False``, a source
    account with secrets stops the migration before anything is written.
    """
    if target_has_key is False:
        secret = [account.name for account in await source.list_accounts() if account.secrets]
        if secret:
            raise MigrateError(
                f"account {secret[0]!r} has secrets but the target has no secret key to encrypt "
                "them with; give the target configuration a [storage] secret_key"
            )
    report = StateReport()
    await _copy_users(source, target, report)
    await _copy_strategies(source, target, report)
    await _copy_accounts(source, target, report)
    assignments = await source.list_assignments()
    for assignment in assignments:
        await target.save_assignment(assignment)
    report.written["assignments"] = len(assignments)
    orders = await source.list_orders()
    for order in orders:
        await target.save_order(order)
    report.written["orders"] = len(orders)
    fills = 0
    for fill in await source.list_fills():
        fills += int(await target.add_fill(fill))
    report.written["fills"] = fills
    await _copy_tasks(source, target, report)
    await _copy_evaluations(source, target, report)
    schedules = await source.list_schedules()
    for schedule in schedules:
        await target.save_schedule(schedule)
    report.written["schedules"] = len(schedules)
    reports = await source.list_reports()
    for stored in reports:
        await target.save_report(stored)
    report.written["reports"] = len(reports)

    ids, _ = await _evaluation_ids(source)
    target_ids, _ = await _evaluation_ids(target)
    before = await state_counts(source, ids)
    after = await state_counts(target, sorted(set(ids) | set(target_ids)))
    for entity in STATE_ENTITIES:
        if before[entity] < 0 or after[entity] < 0:
            continue
        report.counts.append(EntityCount(entity, before[entity], after[entity]))
    return report
