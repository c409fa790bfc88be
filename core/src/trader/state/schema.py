"""The relational schema of the state store, shared by every SQL dialect.

SQLAlchemy Core tables only, written so one definition serves SQLite and PostgreSQL alike:

* money quantities are :class:`DecimalText` (exact decimal strings, never binary floats);
* structured values are :class:`JsonText` (JSON text, so no dialect's JSON type is needed);
* times are ``BIGINT`` milliseconds since the epoch, UTC;
* constraint and index names follow :data:`NAMING_CONVENTION`, so migrations can name them.

The migrations in :mod:`trader.state.migrations` build exactly these tables; a test compares the
two. Change a table here only together with a new migration.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""How constraints and indexes are named, identically on every dialect."""


class DecimalText(TypeDecorator[Decimal]):
    """A :class:`~decimal.Decimal` stored exactly, as its decimal string."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"expected a Decimal, got {type(value).__name__}")
        return str(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"stored value {value!r} is not a decimal number") from None


class JsonText(TypeDecorator[Any]):
    """A JSON-serialisable value stored as compact JSON text with sorted keys."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Every table of the state store."""

state_meta = Table(
    "state_meta",
    metadata,
    Column("key", String(), nullable=False),
    Column("value", Text(), nullable=False),
    PrimaryKeyConstraint("key"),
)
"""Facts about the store itself, such as the salt that secret keys are derived with."""

users = Table(
    "users",
    metadata,
    Column("user_id", String(), nullable=False),
    Column("name", String(), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    PrimaryKeyConstraint("user_id"),
    UniqueConstraint("name"),
)

strategies = Table(
    "strategies",
    metadata,
    Column("name", String(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("language", String(), nullable=False),
    Column("source", Text(), nullable=False),
    Column("source_sha256", String(), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    PrimaryKeyConstraint("name", "version"),
)
"""Every version of every strategy's source; versions count from 1 per name."""

accounts = Table(
    "accounts",
    metadata,
    Column("name", String(), nullable=False),
    Column("exchange", String(), nullable=False),
    Column("settings", JsonText(), nullable=False),
    Column("secrets", LargeBinary(), nullable=True),
    Column("updated_at", BigInteger(), nullable=False),
    PrimaryKeyConstraint("name"),
)
"""Trading accounts; ``secrets`` is ciphertext (see :mod:`trader.state.secrets`) or NULL."""

assignments = Table(
    "assignments",
    metadata,
    Column("assignment_id", String(), nullable=False),
    Column("strategy", String(), nullable=False),
    Column("account", String(), nullable=False),
    Column("symbol", String(), nullable=False),
    Column("timeframe", String(), nullable=False),
    Column("allocation", DecimalText(), nullable=False),
    Column("params", JsonText(), nullable=False),
    Column("strategy_version", Integer(), nullable=True),
    Column("enabled", Boolean(), nullable=False),
    PrimaryKeyConstraint("assignment_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("client_order_id", String(), nullable=False),
    Column("exchange", String(), nullable=False),
    Column("symbol", String(), nullable=False),
    Column("side", String(), nullable=False),
    Column("type", String(), nullable=False),
    Column("amount", DecimalText(), nullable=False),
    Column("price", DecimalText(), nullable=True),
    Column("stop_price", DecimalText(), nullable=True),
    Column("post_only", Boolean(), nullable=False),
    Column("status", String(), nullable=False),
    Column("filled", DecimalText(), nullable=False),
    Column("average_price", DecimalText(), nullable=True),
    Column("exchange_order_id", String(), nullable=True),
    Column("created_at", BigInteger(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
    Column("assignment", String(), nullable=True),
    PrimaryKeyConstraint("client_order_id"),
    Index(None, "status"),
    Index(None, "created_at"),
)

fills = Table(
    "fills",
    metadata,
    Column("exchange", String(), nullable=False),
    Column("fill_id", String(), nullable=False),
    Column("client_order_id", String(), nullable=False),
    Column("symbol", String(), nullable=False),
    Column("side", String(), nullable=False),
    Column("amount", DecimalText(), nullable=False),
    Column("price", DecimalText(), nullable=False),
    Column("fee", DecimalText(), nullable=False),
    Column("fee_currency", String(), nullable=False),
    Column("time", BigInteger(), nullable=False),
    Column("maker", Boolean(), nullable=False),
    PrimaryKeyConstraint("exchange", "fill_id"),
    Index(None, "client_order_id", "time"),
    Index(None, "time"),
)
"""Fills, unique by exchange and the exchange's trade id. No foreign key to ``orders``: trades
made outside trader are stored too."""

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(), nullable=False),
    Column("type", String(), nullable=False),
    Column("owner", String(), nullable=False),
    Column("state", String(), nullable=False),
    Column("payload", JsonText(), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
    Column("final", Boolean(), nullable=False),
    PrimaryKeyConstraint("task_id"),
    Index(None, "final"),
    Index(None, "type"),
)

task_transitions = Table(
    "task_transitions",
    metadata,
    Column("task_id", String(), nullable=False),
    Column("seq", Integer(), nullable=False),
    Column("source", String(), nullable=False),
    Column("dest", String(), nullable=False),
    Column("trigger", String(), nullable=False),
    Column("time", BigInteger(), nullable=False),
    Column("note", Text(), nullable=False),
    PrimaryKeyConstraint("task_id", "seq"),
    ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
)
"""The history of every task, one row per transition; ``seq`` counts from 1 per task."""

evaluations = Table(
    "evaluations",
    metadata,
    Column("assignment_id", String(), nullable=False),
    Column("time", BigInteger(), nullable=False),
    Column("decision", JsonText(), nullable=False),
    Column("duration_us", BigInteger(), nullable=False),
    PrimaryKeyConstraint("assignment_id", "time"),
)
"""One evaluation per assignment and candle time; evaluating again replaces it."""

schedules = Table(
    "schedules",
    metadata,
    Column("name", String(), nullable=False),
    Column("scheduler", String(), nullable=False),
    Column("spec", JsonText(), nullable=False),
    Column("last_fired", BigInteger(), nullable=True),
    PrimaryKeyConstraint("name"),
)

reports = Table(
    "reports",
    metadata,
    Column("report_id", String(), nullable=False),
    Column("kind", String(), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Column("content", LargeBinary(), nullable=False),
    Column("meta", JsonText(), nullable=False),
    PrimaryKeyConstraint("report_id"),
    Index(None, "kind", "created_at"),
)
