"""The state store interface: the relational application data of trader."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trader.interfaces.base import Component
from trader.model import Fill, Order


@dataclass(frozen=True, slots=True)
class User:
    """A person who uses trader; ``name`` is unique."""

    user_id: str
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class StrategyVersion:
    """One version of a strategy's source. Versions count up from 1 per strategy name."""

    name: str
    version: int
    language: str
    source: str
    created_at: int


@dataclass(frozen=True, slots=True)
class TradingAccount:
    """An account on an exchange. ``secrets`` are encrypted at rest and returned decrypted."""

    name: str
    exchange: str
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.secrets))
        return (
            f"TradingAccount(name={self.name!r}, exchange={self.exchange!r}, "
            f"settings={self.settings!r}, secrets=<{keys or 'none'} hidden>)"
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """A strategy put to work on one market of one trading account, with a share of capital."""

    assignment_id: str
    strategy: str
    account: str
    symbol: str
    timeframe: str
    allocation: Decimal
    params: dict[str, Any] = field(default_factory=dict)
    strategy_version: int | None = None
    """``None`` follows the newest version."""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A distributed task as stored: its machine's current state and its payload."""

    task_id: str
    type: str
    owner: str
    state: str
    payload: dict[str, Any]
    created_at: int
    updated_at: int
    final: bool = False


@dataclass(frozen=True, slots=True)
class TaskTransition:
    """One step of a task's history; ``seq`` counts from 1 per task."""

    task_id: str
    seq: int
    source: str
    dest: str
    trigger: str
    time: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A strategy evaluation: what it decided for an assignment at a candle, and how long it
    took."""

    assignment_id: str
    time: int
    decision: dict[str, Any]
    duration_us: int = 0


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A named schedule: which scheduler plugin, its spec, and when it last fired."""

    name: str
    scheduler: str
    spec: dict[str, Any]
    last_fired: int | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """A stored report (daily summary, backtest result...): opaque ``content`` and its ``meta``."""

    report_id: str
    kind: str
    created_at: int
    content: bytes
    meta: dict[str, Any] = field(default_factory=dict)


class StateStore(Component):
    """Relational application state: users, strategies, accounts, assignments, orders, fills,
    tasks and their transitions, evaluations, schedules and reports.

    Contract, checked by ``trader_sdk.testing``'s state store conformance suite:

    * Schemas are created and migrated by :meth:`open` through versioned migrations.
    * Saves keyed by a natural id (strategy name and source, account name, assignment id, client
      order id, fill id, schedule name, report id) are idempotent upserts.
    * :meth:`record_transition` is atomic and checked: it fails with
      :class:`~trader.errors.StorageError` unless the task is in ``source``, so two owners can
      never both move a task.
    * Account secrets are encrypted at rest with the host's key; without a key, saving an
      account that has secrets fails with a clear error rather than storing them in the clear.
    * Every method is a coroutine; failures raise :class:`~trader.errors.StorageError`.
    """

    # users
    @abstractmethod
    async def add_user(self, name: str) -> User:
        """Create a user with a new unique id; raise StorageError if the name is taken."""

    @abstractmethod
    async def get_user(self, name: str) -> User | None:
        """Return the user called ``name``, or ``None``."""

    # strategies
    @abstractmethod
    async def save_strategy(self, name: str, language: str, source: str) -> StrategyVersion:
        """Store ``source`` as the next version of ``name`` unless it equals the newest version,
        in which case return that version unchanged."""

    @abstractmethod
    async def get_strategy(self, name: str, version: int | None = None) -> StrategyVersion | None:
        """Return a version of a strategy (the newest when ``version`` is ``None``)."""

    @abstractmethod
    async def list_strategies(self) -> list[StrategyVersion]:
        """The newest version of every strategy, by name."""

    # trading accounts
    @abstractmethod
    async def save_account(self, account: TradingAccount) -> None:
        """Insert or replace an account by name, encrypting its secrets.

        Raises :class:`~trader.errors.StorageError` when the account has secrets and the store
        has no secret key; secrets are never stored in the clear.
        """

    @abstractmethod
    async def get_account(self, name: str) -> TradingAccount | None:
        """Return an account with its secrets decrypted, or ``None``.

        Raises :class:`~trader.errors.StorageError` when its secrets cannot be decrypted (no
        key, or not the key they were saved with).
        """

    @abstractmethod
    async def list_accounts(self) -> list[TradingAccount]:
        """Every account by name, secrets decrypted as :meth:`get_account` does."""

    # assignments
    @abstractmethod
    async def save_assignment(self, assignment: Assignment) -> None:
        """Insert or replace an assignment by its id."""

    @abstractmethod
    async def list_assignments(self, enabled_only: bool = False) -> list[Assignment]:
        """Assignments by id; ``enabled_only`` leaves out disabled ones."""

    @abstractmethod
    async def delete_assignment(self, assignment_id: str) -> bool:
        """Remove an assignment; return whether it existed."""

    # orders and fills
    @abstractmethod
    async def save_order(self, order: Order) -> None:
        """Insert or update an order by its client order id."""

    @abstractmethod
    async def get_order(self, client_order_id: str) -> Order | None:
        """Return the order with this client order id, or ``None``."""

    @abstractmethod
    async def list_orders(self, open_only: bool = False) -> list[Order]:
        """Orders by creation time; ``open_only`` leaves out those in a final status."""

    @abstractmethod
    async def add_fill(self, fill: Fill) -> bool:
        """Store a fill; return ``False`` when a fill with its exchange and id is already stored."""

    @abstractmethod
    async def list_fills(
        self, client_order_id: str | None = None, since: int | None = None
    ) -> list[Fill]:
        """Fills by time, optionally of one order and at or after ``since``."""

    # tasks
    @abstractmethod
    async def create_task(self, task: TaskRecord) -> None:
        """Store a new task with an empty history; raise StorageError if its id exists."""

    @abstractmethod
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
        """Move a task from ``source`` to ``dest`` and append the step to its history.

        Atomic and checked (compare-and-set on the state): of concurrent callers moving the
        same task from the same ``source``, exactly one succeeds. Raises
        :class:`~trader.errors.StorageError` if the task does not exist or is not in
        ``source``, and then changes nothing. Sets the task's ``updated_at`` to ``time`` and its
        ``final`` flag to ``final``; ``payload`` and ``owner``, when given, replace the task's
        payload and owner in the same transaction. Return the stored step, whose ``seq`` is one
        more than the previous step's (1 for the first).
        """

    @abstractmethod
    async def get_task(self, task_id: str) -> TaskRecord | None:
        """Return a task in its current state, or ``None``."""

    @abstractmethod
    async def list_tasks(
        self, open_only: bool = False, task_type: str | None = None
    ) -> list[TaskRecord]:
        """Tasks by id (ids sort by creation time); ``open_only`` leaves out final ones and
        ``task_type`` keeps only tasks of that type."""

    @abstractmethod
    async def task_history(self, task_id: str) -> list[TaskTransition]:
        """A task's transitions in order (``seq`` 1, 2, ...); empty for an unknown task."""

    # evaluations
    @abstractmethod
    async def add_evaluation(self, evaluation: Evaluation) -> None:
        """Store an evaluation, replacing one of the same assignment and time (idempotent)."""

    @abstractmethod
    async def list_evaluations(
        self, assignment_id: str, start: int | None = None, end: int | None = None
    ) -> list[Evaluation]:
        """An assignment's evaluations with time in ``[start, end)``, oldest first; ``None``
        leaves that end of the range open."""

    # schedules
    @abstractmethod
    async def save_schedule(self, schedule: ScheduleRecord) -> None:
        """Insert or replace a schedule by name (also how ``last_fired`` is updated)."""

    @abstractmethod
    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""

    # reports
    @abstractmethod
    async def save_report(self, report: Report) -> None:
        """Insert or replace a report by its id."""

    @abstractmethod
    async def get_report(self, report_id: str) -> Report | None:
        """Return a report with its content, or ``None``."""

    @abstractmethod
    async def list_reports(self, kind: str | None = None) -> list[Report]:
        """Reports newest first (by ``created_at``, then id), with their content; ``kind``
        keeps only reports of that kind."""
