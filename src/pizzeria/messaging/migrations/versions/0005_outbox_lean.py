"""outbox: only the indexes the relay reads by; room in each page for the rows' marks

The unique index on `id` and the index on `published_at` go (pruning walks `seq` instead), and
on PostgreSQL new pages are filled to half, so that a row marked published is rewritten in its
own page.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pizzeria.kit.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("published_at IS NULL")


def _outbox(*, unique_id: bool) -> sa.Table:
    """The outbox as a new SQLite table is made from it (a unique constraint there can only go
    with its table)."""
    return sa.Table(
        "outbox",
        sa.MetaData(),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", pizzeria.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", pizzeria.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        *((sa.UniqueConstraint("id"),) if unique_id else ()),
    )


def _remake_on_sqlite(*, unique_id: bool) -> None:
    """The outbox made again with its rows (and `seq`), its pending index after them."""
    op.drop_index("ix_outbox_pending", table_name="outbox", sqlite_where=_PENDING)
    with op.batch_alter_table("outbox", copy_from=_outbox(unique_id=unique_id), recreate="always"):
        pass
    op.create_index("ix_outbox_pending", "outbox", ["seq"], sqlite_where=_PENDING)


def upgrade() -> None:
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    if op.get_bind().dialect.name == "sqlite":
        _remake_on_sqlite(unique_id=False)
    else:
        op.drop_constraint("outbox_id_key", "outbox", type_="unique")
        op.execute("ALTER TABLE outbox SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _remake_on_sqlite(unique_id=True)
    else:
        op.execute("ALTER TABLE outbox RESET (fillfactor)")
        op.create_unique_constraint("outbox_id_key", "outbox", ["id"])
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
