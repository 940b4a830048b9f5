"""Payments tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("provider_charge_id", sa.String(64), nullable=True),
    sa.Column("failure_reason", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("refund_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("provider_refund_id", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The trace the charge continues (W3C traceparent of the command that asked for it).
    sa.Column("traceparent", sa.String(55), nullable=True),
)
sa.Index("ix_payments_due", payments.c.status, payments.c.next_attempt_at)
# The charger's work includes completed payments waiting for a refund: found without reading
# every completed payment.
sa.Index("ix_payments_refunds_due", payments.c.status, payments.c.refund_requested, payments.c.next_attempt_at)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
