"""Delivery tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

couriers = sa.Table(
    "couriers",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("delivery_id", sa.Uuid, nullable=True),  # what the courier carries now; null: available
    sa.Column("created_at", UTCDateTime, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("address", sa.String(500), nullable=False),
    sa.Column("courier_id", sa.Uuid, nullable=True),
    # waiting (for a courier) → assigned → out_for_delivery → delivered
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The trace the work on this row continues (W3C traceparent of the message that created it).
    sa.Column("traceparent", sa.String(55), nullable=True),
)
sa.Index("ix_deliveries_status", deliveries.c.status, deliveries.c.updated_at)

delivery_meta = sa.Table(
    "delivery_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
