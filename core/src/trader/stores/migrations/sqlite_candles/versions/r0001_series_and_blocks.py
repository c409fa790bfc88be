"""Series and candle blocks.

A series row names one (exchange, symbol, timeframe). Its candles are kept in blocks of
consecutive candle slots, one row per block, each column a little-endian array in a BLOB
(``time`` int64 ms, ``open`` .. ``volume`` float64, ``closed`` uint8). A row also records its
candle count and first and last open time, so extents are read without decoding blocks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.UniqueConstraint("exchange", "symbol", "timeframe", name="series_key"),
    )
    op.create_table(
        "candle_blocks",
        sa.Column("series_id", sa.Integer, sa.ForeignKey("series.id"), nullable=False),
        sa.Column("block", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_time", sa.Integer, nullable=False),
        sa.Column("last_time", sa.Integer, nullable=False),
        sa.Column("time", sa.LargeBinary, nullable=False),
        sa.Column("open", sa.LargeBinary, nullable=False),
        sa.Column("high", sa.LargeBinary, nullable=False),
        sa.Column("low", sa.LargeBinary, nullable=False),
        sa.Column("close", sa.LargeBinary, nullable=False),
        sa.Column("volume", sa.LargeBinary, nullable=False),
        sa.Column("closed", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "block", name="candle_blocks_key"),
    )


def downgrade() -> None:
    op.drop_table("candle_blocks")
    op.drop_table("series")
