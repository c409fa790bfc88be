"""The initial state schema: users, strategies, accounts, assignments, orders, fills, tasks and
their transitions, evaluations, schedules, reports, and the store's own facts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out (not imported from :mod:`trader.state.schema`) so this revision never
changes when the schema module does: decimals are strings, JSON is text, times are BIGINT ms.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create every table of the first state schema."""
    op.create_table(
        "state_meta",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_state_meta"),
    )
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "strategies",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.String(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_strategies"),
    )
    op.create_table(
        "accounts",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("secrets", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_accounts"),
    )
    op.create_table(
        "assignments",
        sa.Column("assignment_id", sa.String(), nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("allocation", sa.String(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("strategy_version", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("assignment_id", name="pk_assignments"),
    )
    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("amount", sa.String(), nullable=False),
        sa.Column("price", sa.String(), nullable=True),
        sa.Column("stop_price", sa.String(), nullable=True),
        sa.Column("post_only", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("filled", sa.String(), nullable=False),
        sa.Column("average_price", sa.String(), nullable=True),
        sa.Column("exchange_order_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("assignment", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("client_order_id", name="pk_orders"),
    )
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
    op.create_table(
        "fills",
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("fill_id", sa.String(), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("amount", sa.String(), nullable=False),
        sa.Column("price", sa.String(), nullable=False),
        sa.Column("fee", sa.String(), nullable=False),
        sa.Column("fee_currency", sa.String(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("maker", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "fill_id", name="pk_fills"),
    )
    op.create_index("ix_fills_client_order_id_time", "fills", ["client_order_id", "time"])
    op.create_index("ix_fills_time", "fills", ["time"])
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_final", "tasks", ["final"])
    op.create_index("ix_tasks_type", "tasks", ["type"])
    op.create_table(
        "task_transitions",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("dest", sa.String(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq", name="pk_task_transitions"),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.task_id"],
            name="fk_task_transitions_task_id_tasks",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "evaluations",
        sa.Column("assignment_id", sa.String(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("duration_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("assignment_id", "time", name="pk_evaluations"),
    )
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("scheduler", sa.String(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("last_fired", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_schedules"),
    )
    op.create_table(
        "reports",
        sa.Column("report_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("report_id", name="pk_reports"),
    )
    op.create_index("ix_reports_kind_created_at", "reports", ["kind", "created_at"])


def downgrade() -> None:
    """Drop every table of the first state schema."""
    op.drop_index("ix_reports_kind_created_at", table_name="reports")
    op.drop_table("reports")
    op.drop_table("schedules")
    op.drop_table("evaluations")
    op.drop_table("task_transitions")
    op.drop_index("ix_tasks_type", table_name="tasks")
    op.drop_index("ix_tasks_final", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("ix_fills_time", table_name="fills")
    op.drop_index("ix_fills_client_order_id_time", table_name="fills")
    op.drop_table("fills")
    op.drop_index("ix_orders_created_at", table_name="orders")
    op.drop_index("ix_orders_status", table_name="orders")
    op.drop_table("orders")
    op.drop_table("assignments")
    op.drop_table("accounts")
    op.drop_table("strategies")
    op.drop_table("users")
    op.drop_table("state_meta")
