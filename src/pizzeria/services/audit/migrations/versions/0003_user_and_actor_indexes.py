"""audit: a user's entries found through indexes (about them, or done by them)

The filter `user_id = :u OR actor = :u` read the whole log: only `user_id` had an index, and
an OR is served by indexes only when each side has one. Now both do, each partial (rows
without the column have no entry), which costs a write what the full `user_id` index did.
Building them reads the log once; the audit consumer waits for that (its lag grows, nothing
is lost).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_audit_user", table_name="audit_log")
    for name, column in (("ix_audit_user", "user_id"), ("ix_audit_actor", "actor")):
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "audit_log", [column, "seq"], unique=False, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_audit_actor", table_name="audit_log")
    op.drop_index("ix_audit_user", table_name="audit_log")
    op.create_index("ix_audit_user", "audit_log", ["user_id", "seq"], unique=False)
