"""A state store over any SQLAlchemy database: the shared implementation of SQL state stores.

:class:`SqlStateStore` implements :class:`~trader.interfaces.StateStore` with SQLAlchemy Core
over the tables of :mod:`trader.state.schema`, migrated by :mod:`trader.state.migrations`.
Dialect-specific stores (the SQLite default, a PostgreSQL plugin) subclass it and override
:meth:`SqlStateStore._create_engine` to tune their engine; the queries are shared.

SQLAlchemy's engine is synchronous: every operation runs on one dedicated worker thread per
store, so the event loop never blocks and the store's work is serialised in call order.
"""

from __future__ import annotations

import hashlib
import json
import time as _time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Row,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as _postgresql
from sqlalchemy.dialects import sqlite as _sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError, StatementError

from trader.errors import StorageError
from trader.interfaces.state_store import (
    Assignment,
    Evaluation,
    Report,
    ScheduleRecord,
    StateStore,
    StrategyVersion,
    TaskRecord,
    TaskTransition,
    TradingAccount,
    User,
)
from trader.model import Fill, Order, OrderStatus
from trader.state import migrations, schema
from trader.state.secrets import SecretBox, new_salt
from trader.stores.threads import StoreThreads

T = TypeVar("T")

WRITE_OPTION = "trader_state_write"
"""Execution option set on connections that will write; a dialect may begin such transactions
differently (SQLite takes the write lock up front with ``BEGIN IMMEDIATE``)."""

_SALT_KEY = "secrets_salt"
_FINAL_STATUSES = tuple(s.value for s in OrderStatus if s.is_final)
_RETRIES = 5


def now_ms() -> int:
    """The current time in integer milliseconds since the epoch, UTC."""
    return _time.time_ns() // 1_000_000


class SqlStateStore(StateStore):
    """The state store over a SQLAlchemy database URL.

    :param url: a SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``).
    :param secret_key: the passphrase account secrets are encrypted with; without it accounts
        with secrets can be neither saved nor read.
    :param engine_options: extra keyword arguments for :func:`sqlalchemy.create_engine`.
    :param label: how messages name this store (never including credentials).

    ``open()`` connects and migrates the schema to the newest revision when it is not there
    yet; ``close()`` releases the connections and the worker thread. Errors from the database
    surface as :class:`~trader.errors.StorageError` naming the store and the operation.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        secret_key: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        self._url = url
        self._secret_key = secret_key or None
        self._engine_options = dict(engine_options or {})
        self.label = label or f"state store {_safe_url(url)}"
        self._engine: Engine | None = None
        self._threads = StoreThreads(
            self.label,
            thread_name="trader-state",
            driver_errors=(SQLAlchemyError, OSError, ValueError, TypeError),
            describe=lambda what, error: StorageError(
                f"{self.label}: {what} failed: {_describe(error)}"
            ),
        )
        self._box: SecretBox | None = None
        self._salt: bytes | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"

    # ---------------------------------------------------------------- lifecycle

    @property
    def engine(self) -> Engine:
        """The open store's engine (for tests and tools); raises StorageError when closed."""
        if self._engine is None:
            raise StorageError(f"{self.label} is not open: call open() first")
        return self._engine

    async def open(self) -> None:
        """Connect, migrate the schema to the newest revision if needed, and get ready.

        Calling it on an open store does nothing.
        """
        if self._engine is not None:
            return
        self._threads.start()
        try:
            self._engine = await self._threads.run("open", self._open_sync)
        except BaseException:
            await self._threads.stop()
            raise

    async def close(self) -> None:
        """Close every connection and stop the worker thread. Calling it again does nothing."""
        engine = self._engine
        self._engine = None
        self._box = None
        await self._threads.stop(None if engine is None else engine.dispose, wait=True)

    def _create_engine(self) -> Engine:
        """Build the engine. Subclasses override this to add dialect settings and event hooks.

        Parameters are hidden from SQLAlchemy's error messages, so no stored value (secret or
        not) ever reaches a log through an exception.
        """
        options = {"hide_parameters": True, **self._engine_options}
        return create_engine(self._url, **options)

    def _open_sync(self) -> Engine:
        engine = self._create_engine()
        try:
            with engine.connect() as connection:
                at_head = migrations.current_revision(connection) == migrations.head_revision()
            if not at_head:
                with self._write(engine) as connection:
                    migrations.upgrade_to_head(connection)
            self._salt = self._load_salt(engine)
            self._box = None
            return engine
        except BaseException:
            engine.dispose()
            raise

    def _load_salt(self, engine: Engine) -> bytes:
        table = schema.state_meta
        query = select(table.c.value).where(table.c.key == _SALT_KEY)
        with engine.connect() as connection:
            stored = connection.execute(query).scalar_one_or_none()
        if stored is None:
            with self._write(engine) as connection:
                _insert_ignore(connection, table, {"key": _SALT_KEY, "value": new_salt().hex()})
                stored = connection.execute(query).scalar_one()
        return bytes.fromhex(stored)

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def _write(self, engine: Engine | None = None) -> Iterator[Connection]:
        """A connection in a write transaction, committed on success."""
        with (engine or self.engine).connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection in a read transaction (one consistent view), rolled back afterwards."""
        with self.engine.connect() as connection:
            yield connection

    async def _call(self, operation: str, function: Callable[..., T], *args: Any) -> T:
        if self._engine is None:
            raise StorageError(f"{self.label} is not open: call open() before {operation}")
        return await self._threads.run(operation, lambda: function(*args))

    def _secret_box(self) -> SecretBox | None:
        if self._secret_key is None:
            return None
        if self._box is None:
            assert self._salt is not None
            self._box = SecretBox(self._secret_key, self._salt)
        return self._box

    # ---------------------------------------------------------------- users

    async def add_user(self, name: str) -> User:
        """Create a user with a new unique id; raise StorageError if the name is taken."""
        return await self._call("add_user", self._add_user, name)

    def _add_user(self, name: str) -> User:
        user = User(user_id=uuid.uuid4().hex, name=name, created_at=now_ms())
        try:
            with self._write() as connection:
                connection.execute(
                    insert(schema.users).values(
                        user_id=user.user_id, name=user.name, created_at=user.created_at
                    )
                )
        except IntegrityError:
            raise StorageError(
                f"{self.label}: a user called {name!r} exists already; choose another name"
            ) from None
        return user

    async def get_user(self, name: str) -> User | None:
        """Return the user called ``name``, or ``None``."""
        return await self._call("get_user", self._get_user, name)

    def _get_user(self, name: str) -> User | None:
        table = schema.users
        with self._read() as connection:
            row = connection.execute(select(table).where(table.c.name == name)).one_or_none()
        return None if row is None else User(row.user_id, row.name, row.created_at)

    # ---------------------------------------------------------------- strategies

    async def save_strategy(self, name: str, language: str, source: str) -> StrategyVersion:
        """Store ``source`` as the next version of ``name`` unless it equals the newest version
        (same language and source), in which case return that version unchanged."""
        return await self._call("save_strategy", self._save_strategy, name, language, source)

    def _save_strategy(self, name: str, language: str, source: str) -> StrategyVersion:
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        table = schema.strategies
        for _attempt in range(_RETRIES):
            try:
                with self._write() as connection:
                    newest = connection.execute(
                        select(table)
                        .where(table.c.name == name)
                        .order_by(table.c.version.desc())
                        .limit(1)
                    ).one_or_none()
                    if (
                        newest is not None
                        and newest.source_sha256 == digest
                        and newest.language == language
                        and newest.source == source
                    ):
                        return _strategy(newest)
                    version = 1 if newest is None else newest.version + 1
                    created = now_ms()
                    connection.execute(
                        insert(table).values(
                            name=name,
                            version=version,
                            language=language,
                            source=source,
                            source_sha256=digest,
                            created_at=created,
                        )
                    )
                    return StrategyVersion(name, version, language, source, created)
            except IntegrityError:
                continue  # another writer took this version number first: look again
        raise StorageError(f"{self.label}: save_strategy {name!r} kept colliding; try again")

    async def get_strategy(self, name: str, version: int | None = None) -> StrategyVersion | None:
        """Return a version of a strategy (the newest when ``version`` is ``None``)."""
        return await self._call("get_strategy", self._get_strategy, name, version)

    def _get_strategy(self, name: str, version: int | None) -> StrategyVersion | None:
        table = schema.strategies
        query = select(table).where(table.c.name == name)
        if version is None:
            query = query.order_by(table.c.version.desc()).limit(1)
        else:
            query = query.where(table.c.version == version)
        with self._read() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _strategy(row)

    async def list_strategies(self) -> list[StrategyVersion]:
        """The newest version of every strategy, by name."""
        return await self._call("list_strategies", self._list_strategies)

    def _list_strategies(self) -> list[StrategyVersion]:
        table = schema.strategies
        newest = (
            select(table.c.name, func.max(table.c.version).label("version"))
            .group_by(table.c.name)
            .subquery()
        )
        query = (
            select(table)
            .join(
                newest,
                (table.c.name == newest.c.name) & (table.c.version == newest.c.version),
            )
            .order_by(table.c.name)
        )
        with self._read() as connection:
            return [_strategy(row) for row in connection.execute(query)]

    # ---------------------------------------------------------------- accounts

    async def save_account(self, account: TradingAccount) -> None:
        """Insert or replace an account by name, its secrets encrypted with the store's key.

        Raises :class:`~trader.errors.StorageError` when the account has secrets and the store
        has no secret key.
        """
        await self._call("save_account", self._save_account, account)

    def _save_account(self, account: TradingAccount) -> None:
        sealed: bytes | None = None
        if account.secrets:
            box = self._secret_box()
            if box is None:
                raise StorageError(
                    f"{self.label}: cannot save the secrets of account {account.name!r}: no "
                    "secret key is configured to encrypt them; set [storage] secret_key in "
                    "trader.toml"
                )
            plaintext = json.dumps(account.secrets, sort_keys=True).encode("utf-8")
            sealed = box.seal(plaintext, _account_context(account.name))
        values = {
            "name": account.name,
            "exchange": account.exchange,
            "settings": dict(account.settings),
            "secrets": sealed,
            "updated_at": now_ms(),
        }
        with self._write() as connection:
            _upsert(connection, schema.accounts, values, ["name"])

    async def get_account(self, name: str) -> TradingAccount | None:
        """Return an account with its secrets decrypted, or ``None``."""
        return await self._call("get_account", self._get_account, name)

    def _get_account(self, name: str) -> TradingAccount | None:
        table = schema.accounts
        with self._read() as connection:
            row = connection.execute(select(table).where(table.c.name == name)).one_or_none()
        return None if row is None else self._account(row)

    async def list_accounts(self) -> list[TradingAccount]:
        """Every account by name, with secrets decrypted."""
        return await self._call("list_accounts", self._list_accounts)

    def _list_accounts(self) -> list[TradingAccount]:
        table = schema.accounts
        with self._read() as connection:
            rows = connection.execute(select(table).order_by(table.c.name)).all()
        return [self._account(row) for row in rows]

    def _account(self, row: Row[Any]) -> TradingAccount:
        secrets: dict[str, str] = {}
        if row.secrets is not None:
            box = self._secret_box()
            what = f"secrets of account {row.name!r}"
            if box is None:
                raise StorageError(
                    f"{self.label}: cannot read the {what}: they are encrypted and no secret "
                    "key is configured; set [storage] secret_key to the key they were saved with"
                )
            secrets = json.loads(box.open(bytes(row.secrets), _account_context(row.name), what))
        return TradingAccount(
            name=row.name, exchange=row.exchange, settings=row.settings, secrets=secrets
        )

    # ---------------------------------------------------------------- assignments

    async def save_assignment(self, assignment: Assignment) -> None:
        """Insert or replace an assignment by its id."""
        await self._call("save_assignment", self._save_assignment, assignment)

    def _save_assignment(self, assignment: Assignment) -> None:
        values = {
            "assignment_id": assignment.assignment_id,
            "strategy": assignment.strategy,
            "account": assignment.account,
            "symbol": assignment.symbol,
            "timeframe": assignment.timeframe,
            "allocation": Decimal(assignment.allocation),
            "params": dict(assignment.params),
            "strategy_version": assignment.strategy_version,
            "enabled": bool(assignment.enabled),
        }
        with self._write() as connection:
            _upsert(connection, schema.assignments, values, ["assignment_id"])

    async def list_assignments(self, enabled_only: bool = False) -> list[Assignment]:
        """Assignments by id; ``enabled_only`` leaves out disabled ones."""
        return await self._call("list_assignments", self._list_assignments, enabled_only)

    def _list_assignments(self, enabled_only: bool) -> list[Assignment]:
        table = schema.assignments
        query = select(table).order_by(table.c.assignment_id)
        if enabled_only:
            query = query.where(table.c.enabled.is_(True))
        with self._read() as connection:
            return [
                Assignment(
                    assignment_id=row.assignment_id,
                    strategy=row.strategy,
                    account=row.account,
                    symbol=row.symbol,
                    timeframe=row.timeframe,
                    allocation=row.allocation,
                    params=row.params,
                    strategy_version=row.strategy_version,
                    enabled=bool(row.enabled),
                )
                for row in connection.execute(query)
            ]

    async def delete_assignment(self, assignment_id: str) -> bool:
        """Remove an assignment; return whether it existed."""
        return await self._call("delete_assignment", self._delete_assignment, assignment_id)

    def _delete_assignment(self, assignment_id: str) -> bool:
        table = schema.assignments
        with self._write() as connection:
            result = connection.execute(delete(table).where(table.c.assignment_id == assignment_id))
        return bool(result.rowcount)

    # ---------------------------------------------------------------- orders and fills

    async def save_order(self, order: Order) -> None:
        """Insert or update an order by its client order id."""
        await self._call("save_order", self._save_order, order)

    def _save_order(self, order: Order) -> None:
        values = {
            "client_order_id": order.client_order_id,
            "exchange": order.exchange,
            "symbol": order.symbol,
            "side": order.side.value,
            "type": order.type.value,
            "amount": order.amount,
            "price": order.price,
            "stop_price": order.stop_price,
            "post_only": order.post_only,
            "status": order.status.value,
            "filled": order.filled,
            "average_price": order.average_price,
            "exchange_order_id": order.exchange_order_id,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "assignment": order.assignment,
        }
        with self._write() as connection:
            _upsert(connection, schema.orders, values, ["client_order_id"])

    async def get_order(self, client_order_id: str) -> Order | None:
        """Return the order with this client order id, or ``None``."""
        return await self._call("get_order", self._get_order, client_order_id)

    def _get_order(self, client_order_id: str) -> Order | None:
        table = schema.orders
        query = select(table).where(table.c.client_order_id == client_order_id)
        with self._read() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _order(row)

    async def list_orders(self, open_only: bool = False) -> list[Order]:
        """Orders by creation time (then id); ``open_only`` leaves out final ones."""
        return await self._call("list_orders", self._list_orders, open_only)

    def _list_orders(self, open_only: bool) -> list[Order]:
        table = schema.orders
        query = select(table).order_by(table.c.created_at, table.c.client_order_id)
        if open_only:
            query = query.where(table.c.status.not_in(_FINAL_STATUSES))
        with self._read() as connection:
            return [_order(row) for row in connection.execute(query)]

    async def add_fill(self, fill: Fill) -> bool:
        """Store a fill; return ``False`` when a fill with its exchange and id is stored."""
        return await self._call("add_fill", self._add_fill, fill)

    def _add_fill(self, fill: Fill) -> bool:
        values = {
            "exchange": fill.exchange,
            "fill_id": fill.fill_id,
            "client_order_id": fill.client_order_id,
            "symbol": fill.symbol,
            "side": fill.side.value,
            "amount": fill.amount,
            "price": fill.price,
            "fee": fill.fee,
            "fee_currency": fill.fee_currency,
            "time": fill.time,
            "maker": fill.maker,
        }
        with self._write() as connection:
            return _insert_ignore(connection, schema.fills, values)

    async def list_fills(
        self, client_order_id: str | None = None, since: int | None = None
    ) -> list[Fill]:
        """Fills by time (then exchange and id), optionally of one order and at or after
        ``since``."""
        return await self._call("list_fills", self._list_fills, client_order_id, since)

    def _list_fills(self, client_order_id: str | None, since: int | None) -> list[Fill]:
        table = schema.fills
        query = select(table).order_by(table.c.time, table.c.exchange, table.c.fill_id)
        if client_order_id is not None:
            query = query.where(table.c.client_order_id == client_order_id)
        if since is not None:
            query = query.where(table.c.time >= since)
        with self._read() as connection:
            return [
                Fill(
                    fill_id=row.fill_id,
                    client_order_id=row.client_order_id,
                    exchange=row.exchange,
                    symbol=row.symbol,
                    side=row.side,
                    amount=row.amount,
                    price=row.price,
                    fee=row.fee,
                    fee_currency=row.fee_currency,
                    time=row.time,
                    maker=bool(row.maker),
                )
                for row in connection.execute(query)
            ]

    # ---------------------------------------------------------------- tasks

    async def create_task(self, task: TaskRecord) -> None:
        """Store a new task with an empty history; raise StorageError if its id exists."""
        await self._call("create_task", self._create_task, task)

    def _create_task(self, task: TaskRecord) -> None:
        values = {
            "task_id": task.task_id,
            "type": task.type,
            "owner": task.owner,
            "state": task.state,
            "payload": dict(task.payload),
            "created_at": task.created_at,
            "updated_at": task.updated_at,
            "final": bool(task.final),
        }
        try:
            with self._write() as connection:
                connection.execute(insert(schema.tasks).values(values))
        except IntegrityError:
            raise StorageError(
                f"{self.label}: task {task.task_id} exists already; give a new task a new id"
            ) from None

    async def record_transition(
        self,
        task_id: str,
        source: str,
        dest: str,
        trigger: str,
        time: int,
        *,
        final: bool = False,
        note: str = "",
        payload: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> TaskTransition:
        """Move a task from ``source`` to ``dest`` atomically and append the step to its
        history; raise StorageError, changing nothing, unless the task is in ``source``."""
        step = TaskTransition(task_id, 0, source, dest, trigger, time, note)
        return await self._call(
            "record_transition", self._record_transition, step, final, payload, owner
        )

    def _record_transition(
        self,
        step: TaskTransition,
        final: bool,
        payload: dict[str, Any] | None,
        owner: str | None,
    ) -> TaskTransition:
        tasks, history = schema.tasks, schema.task_transitions
        changes: dict[str, Any] = {"state": step.dest, "updated_at": step.time, "final": final}
        if payload is not None:
            changes["payload"] = dict(payload)
        if owner is not None:
            changes["owner"] = owner
        with self._write() as connection:
            # Compare-and-set: the row lock taken by this UPDATE serialises concurrent movers.
            moved = connection.execute(
                update(tasks)
                .where(tasks.c.task_id == step.task_id, tasks.c.state == step.source)
                .values(changes)
            )
            if moved.rowcount != 1:
                state = connection.execute(
                    select(tasks.c.state).where(tasks.c.task_id == step.task_id)
                ).scalar_one_or_none()
                if state is None:
                    raise StorageError(f"{self.label}: task {step.task_id} does not exist")
                raise StorageError(
                    f"{self.label}: task {step.task_id} is in state {state!r}, not "
                    f"{step.source!r}; read it again before moving it"
                )
            last = connection.execute(
                select(func.max(history.c.seq)).where(history.c.task_id == step.task_id)
            ).scalar_one_or_none()
            stored = TaskTransition(
                task_id=step.task_id,
                seq=(last or 0) + 1,
                source=step.source,
                dest=step.dest,
                trigger=step.trigger,
                time=step.time,
                note=step.note,
            )
            connection.execute(
                insert(history).values(
                    task_id=stored.task_id,
                    seq=stored.seq,
                    source=stored.source,
                    dest=stored.dest,
                    trigger=stored.trigger,
                    time=stored.time,
                    note=stored.note,
                )
            )
        return stored

    async def get_task(self, task_id: str) -> TaskRecord | None:
        """Return a task in its current state, or ``None``."""
        return await self._call("get_task", self._get_task, task_id)

    def _get_task(self, task_id: str) -> TaskRecord | None:
        table = schema.tasks
        with self._read() as connection:
            row = connection.execute(select(table).where(table.c.task_id == task_id)).one_or_none()
        return None if row is None else _task(row)

    async def list_tasks(
        self, open_only: bool = False, task_type: str | None = None
    ) -> list[TaskRecord]:
        """Tasks by id; ``open_only`` leaves out final ones, ``task_type`` filters by type."""
        return await self._call("list_tasks", self._list_tasks, open_only, task_type)

    def _list_tasks(self, open_only: bool, task_type: str | None) -> list[TaskRecord]:
        table = schema.tasks
        query = select(table).order_by(table.c.task_id)
        if open_only:
            query = query.where(table.c.final.is_(False))
        if task_type is not None:
            query = query.where(table.c.type == task_type)
        with self._read() as connection:
            return [_task(row) for row in connection.execute(query)]

    async def task_history(self, task_id: str) -> list[TaskTransition]:
        """A task's transitions in order; empty for an unknown task."""
        return await self._call("task_history", self._task_history, task_id)

    def _task_history(self, task_id: str) -> list[TaskTransition]:
        table = schema.task_transitions
        query = select(table).where(table.c.task_id == task_id).order_by(table.c.seq)
        with self._read() as connection:
            return [
                TaskTransition(
                    task_id=row.task_id,
                    seq=row.seq,
                    source=row.source,
                    dest=row.dest,
                    trigger=row.trigger,
                    time=row.time,
                    note=row.note,
                )
                for row in connection.execute(query)
            ]

    # ---------------------------------------------------------------- evaluations

    async def add_evaluation(self, evaluation: Evaluation) -> None:
        """Store an evaluation, replacing one of the same assignment and time."""
        await self._call("add_evaluation", self._add_evaluation, evaluation)

    def _add_evaluation(self, evaluation: Evaluation) -> None:
        values = {
            "assignment_id": evaluation.assignment_id,
            "time": evaluation.time,
            "decision": dict(evaluation.decision),
            "duration_us": evaluation.duration_us,
        }
        with self._write() as connection:
            _upsert(connection, schema.evaluations, values, ["assignment_id", "time"])

    async def list_evaluations(
        self, assignment_id: str, start: int | None = None, end: int | None = None
    ) -> list[Evaluation]:
        """An assignment's evaluations with time in ``[start, end)``, oldest first."""
        return await self._call(
            "list_evaluations", self._list_evaluations, assignment_id, start, end
        )

    def _list_evaluations(
        self, assignment_id: str, start: int | None, end: int | None
    ) -> list[Evaluation]:
        table = schema.evaluations
        query = select(table).where(table.c.assignment_id == assignment_id).order_by(table.c.time)
        if start is not None:
            query = query.where(table.c.time >= start)
        if end is not None:
            query = query.where(table.c.time < end)
        with self._read() as connection:
            return [
                Evaluation(row.assignment_id, row.time, row.decision, row.duration_us)
                for row in connection.execute(query)
            ]

    # ---------------------------------------------------------------- schedules

    async def save_schedule(self, schedule: ScheduleRecord) -> None:
        """Insert or replace a schedule by name."""
        await self._call("save_schedule", self._save_schedule, schedule)

    def _save_schedule(self, schedule: ScheduleRecord) -> None:
        values = {
            "name": schedule.name,
            "scheduler": schedule.scheduler,
            "spec": dict(schedule.spec),
            "last_fired": schedule.last_fired,
        }
        with self._write() as connection:
            _upsert(connection, schema.schedules, values, ["name"])

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        return await self._call("list_schedules", self._list_schedules)

    def _list_schedules(self) -> list[ScheduleRecord]:
        table = schema.schedules
        with self._read() as connection:
            return [
                ScheduleRecord(row.name, row.scheduler, row.spec, row.last_fired)
                for row in connection.execute(select(table).order_by(table.c.name))
            ]

    # ---------------------------------------------------------------- reports

    async def save_report(self, report: Report) -> None:
        """Insert or replace a report by its id."""
        await self._call("save_report", self._save_report, report)

    def _save_report(self, report: Report) -> None:
        values = {
            "report_id": report.report_id,
            "kind": report.kind,
            "created_at": report.created_at,
            "content": bytes(report.content),
            "meta": dict(report.meta),
        }
        with self._write() as connection:
            _upsert(connection, schema.reports, values, ["report_id"])

    async def get_report(self, report_id: str) -> Report | None:
        """Return a report with its content, or ``None``."""
        return await self._call("get_report", self._get_report, report_id)

    def _get_report(self, report_id: str) -> Report | None:
        table = schema.reports
        query = select(table).where(table.c.report_id == report_id)
        with self._read() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _report(row)

    async def list_reports(self, kind: str | None = None) -> list[Report]:
        """Reports newest first (by creation time, then id), optionally of one kind."""
        return await self._call("list_reports", self._list_reports, kind)

    def _list_reports(self, kind: str | None) -> list[Report]:
        table = schema.reports
        query = select(table).order_by(table.c.created_at.desc(), table.c.report_id.desc())
        if kind is not None:
            query = query.where(table.c.kind == kind)
        with self._read() as connection:
            return [_report(row) for row in connection.execute(query)]


# -------------------------------------------------------------------- helpers


def _upsert(
    connection: Connection, table: Table, values: Mapping[str, Any], keys: Sequence[str]
) -> None:
    """Insert ``values``, or update the row with the same ``keys`` to them."""
    changed = {name: value for name, value in values.items() if name not in keys}
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        module: Any = _sqlite if dialect == "sqlite" else _postgresql
        statement = module.insert(table).values(dict(values))
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in changed},
        )
        connection.execute(statement)
        return
    match = [table.c[name] == values[name] for name in keys]
    if connection.execute(update(table).where(*match).values(changed)).rowcount == 0:
        connection.execute(insert(table).values(dict(values)))


def _insert_ignore(connection: Connection, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert ``values`` unless a row with the same primary key exists; return whether
    a row was inserted."""
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        module: Any = _sqlite if dialect == "sqlite" else _postgresql
        statement = module.insert(table).values(dict(values)).on_conflict_do_nothing()
        if connection.dialect.insert_returning:
            # rowcount of INSERT ... ON CONFLICT is not reliable on every driver (psycopg: -1).
            returning = statement.returning(*table.primary_key.columns)
            return connection.execute(returning).first() is not None
        return bool(connection.execute(statement).rowcount == 1)
    try:
        with connection.begin_nested():
            connection.execute(insert(table).values(dict(values)))
    except IntegrityError:
        return False
    return True


def _account_context(name: str) -> bytes:
    return b"account\x00" + name.encode("utf-8")


def _strategy(row: Row[Any]) -> StrategyVersion:
    return StrategyVersion(row.name, row.version, row.language, row.source, row.created_at)


def _order(row: Row[Any]) -> Order:
    return Order(
        client_order_id=row.client_order_id,
        exchange=row.exchange,
        symbol=row.symbol,
        side=row.side,
        type=row.type,
        amount=row.amount,
        price=row.price,
        stop_price=row.stop_price,
        post_only=bool(row.post_only),
        status=row.status,
        filled=row.filled,
        average_price=row.average_price,
        exchange_order_id=row.exchange_order_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        assignment=row.assignment,
    )


def _task(row: Row[Any]) -> TaskRecord:
    return TaskRecord(
        task_id=row.task_id,
        type=row.type,
        owner=row.owner,
        state=row.state,
        payload=row.payload,
        created_at=row.created_at,
        updated_at=row.updated_at,
        final=bool(row.final),
    )


def _report(row: Row[Any]) -> Report:
    return Report(row.report_id, row.kind, row.created_at, bytes(row.content), row.meta)


def _safe_url(url: str | URL) -> str:
    """The URL with any password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError, TypeError):
        return "<database>"


def _describe(exc: BaseException) -> str:
    """One line saying what went wrong, without SQLAlchemy's boilerplate or parameters."""
    cause: BaseException = exc
    if isinstance(exc, StatementError) and exc.orig is not None:
        cause = exc.orig
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__
