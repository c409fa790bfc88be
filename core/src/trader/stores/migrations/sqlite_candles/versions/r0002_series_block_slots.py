"""Record each series' block width.

Revision 0001 cut every series into blocks of 1024 candle slots, fixed in code. The width is now
stored per series (``series.block_slots``) so a later version can pick another width for new
series while files written before keep theirs. Existing series get 1024, the width they use.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "series",
        sa.Column("block_slots", sa.Integer, nullable=False, server_default=sa.text("1024")),
    )


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("block_slots")
