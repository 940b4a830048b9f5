"""The audit log: one row per message ever published, never changed or removed."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(64), nullable=False, unique=True),
    sa.Column("topic", sa.String(120), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(255), nullable=True),
    sa.Column("order_id", sa.String(64), nullable=True),
    sa.Column("user_id", sa.String(64), nullable=True),  # whom it is about: the customer, the account
    sa.Column("actor", sa.String(64), nullable=True),  # who did it, when a person did
    sa.Column("correlation_id", sa.String(64), nullable=True),
    sa.Column("causation_id", sa.String(64), nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("data", JSONType, nullable=False),
)
sa.Index("ix_audit_order", audit_log.c.order_id, audit_log.c.seq)
sa.Index("ix_audit_occurred", audit_log.c.occurred_at)
# A user's entries are those about them or done by them (`user_id = :u OR actor = :u`): one
# index each, so that both databases answer the filter by merging the two; each keeps only the
# rows that have the column (about half the log names a customer, a person acts in few).
_USER = audit_log.c.user_id.is_not(None)
_ACTOR = audit_log.c.actor.is_not(None)
sa.Index("ix_audit_user", audit_log.c.user_id, audit_log.c.seq, sqlite_where=_USER, postgresql_where=_USER)
sa.Index("ix_audit_actor", audit_log.c.actor, audit_log.c.seq, sqlite_where=_ACTOR, postgresql_where=_ACTOR)

# The analytics read model: one row per order, filled from the events of orders and payments
# (in whatever order they arrive); the figures are computed from it on request.
analytics_orders = sa.Table(
    "analytics_orders",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("placed_at", UTCDateTime, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("items", JSONType, nullable=True),
    sa.Column("status", sa.String(20), nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("cancelled_at", UTCDateTime, nullable=True),
    sa.Column("cancel_reason", sa.String(64), nullable=True),
    sa.Column("payment_outcome", sa.String(16), nullable=True),  # completed | failed
)
sa.Index("ix_analytics_placed", analytics_orders.c.placed_at)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
