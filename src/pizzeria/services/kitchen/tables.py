"""Kitchen tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

recipes = sa.Table(
    "recipes",
    metadata,
    sa.Column("menu_item_id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("ingredients", JSONType, nullable=False),  # {ingredient: quantity per pizza}
    sa.Column("removed", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

# Per ingredient: what is on hand, held for orders, cooked, and everything ever received;
# on_hand + reserved + consumed == received always.
ingredients = sa.Table(
    "ingredients",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("on_hand", sa.BigInteger, nullable=False),
    sa.Column("reserved", sa.BigInteger, nullable=False),
    sa.Column("consumed", sa.BigInteger, nullable=False),
    sa.Column("received", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("order_id", sa.Uuid, primary_key=True),
    sa.Column("ingredient", sa.String(40), primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # held | released | consumed
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),  # queued → preparing → baking → ready | cancelled
    sa.Column("lines", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The trace the work on this row continues (W3C traceparent of the message that created it).
    sa.Column("traceparent", sa.String(55), nullable=True),
)
sa.Index("ix_tickets_status", tickets.c.status, tickets.c.updated_at)

kitchen_meta = sa.Table(
    "kitchen_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
