"""Orders tables: the orders themselves, their lines and history, idempotency keys, and the
copy of the menu kept from catalog events."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

menu_copy = sa.Table(
    "menu_copy",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("prices", JSONType, nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("removed", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("payment_status", sa.String(32), nullable=False),
    sa.Column("payment_id", sa.Uuid, nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("payment_token", sa.String(64), nullable=False),
    sa.Column("delivery_address", sa.String(500), nullable=False),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("cancel_reason", sa.String(64), nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)
sa.Index("ix_orders_customer", orders.c.customer_id, orders.c.id)
# Each customer's unpaid orders, counted at every placement (ORDER_MAX_UNPAID): a few rows, however
# long the customer's history.
sa.Index(
    "ix_orders_unpaid",
    orders.c.customer_id,
    sqlite_where=orders.c.status == "pending",
    postgresql_where=orders.c.status == "pending",
)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True),
    sa.Column("menu_item_id", sa.Uuid, nullable=False),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("size", sa.String(20), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.BigInteger, nullable=False),
)

order_history = sa.Table(
    "order_history",
    metadata,
    sa.Column("order_id", sa.Uuid, sa.ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("order_id", sa.Uuid, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
)

# -- the read model (CQRS) -------------------------------------------------------------------------
# Kept by consuming every context's facts; rebuilt from them into a new generation while the
# current one keeps answering (`pizzeria projections rebuild orders`).

order_views = sa.Table(
    "order_views",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("id", sa.Uuid, primary_key=True),
    # Facts of other topics may arrive before OrderPlaced: such a row exists with only what
    # they said until OrderPlaced fills in the rest (customer_id still null until then).
    sa.Column("customer_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("items", JSONType, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("delivery_address", sa.String(500), nullable=True),
    sa.Column("cancel_reason", sa.String(64), nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("payment_status", sa.String(32), nullable=True),
    sa.Column("courier_name", sa.String(80), nullable=True),
    sa.Column("history", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=True),
)
sa.Index("ix_order_views_customer", order_views.c.generation, order_views.c.customer_id, order_views.c.id)
sa.Index("ix_order_views_status", order_views.c.generation, order_views.c.status, order_views.c.id)

projections = sa.Table(
    "projections",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("active_generation", sa.Integer, nullable=False),
    sa.Column("building_generation", sa.Integer, nullable=True),
    sa.Column("requested_at", UTCDateTime, nullable=True),
    sa.Column("switched_at", UTCDateTime, nullable=True),
)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
