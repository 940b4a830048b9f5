"""token epochs: the newest token epoch of each account identity told about

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pizzeria.kit.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_epochs",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", pizzeria.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index("ix_token_epochs_updated_at", "token_epochs", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_token_epochs_updated_at", table_name="token_epochs")
    op.drop_table("token_epochs")
