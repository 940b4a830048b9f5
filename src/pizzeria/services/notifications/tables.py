"""Notifications tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

contacts = sa.Table(
    "order_contacts",
    metadata,
    sa.Column("order_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("order_id", sa.Uuid, nullable=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("template", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The trace the sending continues (W3C traceparent of the event it is about).
    sa.Column("traceparent", sa.String(55), nullable=True),
    sa.UniqueConstraint("event_id", "template", "channel", name="uq_notifications_event_channel"),
)
sa.Index("ix_notifications_customer", notifications.c.customer_id, notifications.c.id)
sa.Index("ix_notifications_order", notifications.c.order_id)
# The sender's queue: only the few rows still to send, so finding them never scans the history.
sa.Index(
    "ix_notifications_queued",
    notifications.c.id,
    sqlite_where=notifications.c.status == "queued",
    postgresql_where=notifications.c.status == "queued",
)

# Notifications whose order's contact details have not arrived yet (events of two topics can
# arrive in either order); they go out as soon as the contact is known.
deferred = sa.Table(
    "deferred_notifications",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("template", sa.String(64), primary_key=True),
    sa.Column("order_id", sa.Uuid, nullable=False, index=True),
    sa.Column("values", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
