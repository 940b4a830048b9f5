"""payments: the completed payments waiting for a refund found by index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_payments_refunds_due", "payments", ["status", "refund_requested", "next_attempt_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_payments_refunds_due", table_name="payments")
