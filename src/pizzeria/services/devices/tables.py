"""Devices tables: each device with its twin, and the commands sent to it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import JSONType, UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),  # oven | tracker
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("station", sa.String(40), nullable=True),  # an oven's kitchen station
    # A tracker's courier (their account id): one tracker per courier.
    sa.Column("courier_id", sa.String(64), nullable=True, unique=True),
    sa.Column("secret_digest", sa.String(64), nullable=False),
    # The twin: the settings staff want, their version, and what the device last reported.
    sa.Column("desired", JSONType, nullable=False),
    sa.Column("desired_version", sa.Integer, nullable=False),
    sa.Column("reported", JSONType, nullable=False),
    sa.Column("reported_at", UTCDateTime, nullable=True),
    sa.Column("online", sa.Boolean, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
# The presence watch reads the online devices that were silent longest.
sa.Index("ix_devices_presence", devices.c.online, devices.c.last_seen_at)

device_commands = sa.Table(
    "device_commands",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("device_id", sa.Uuid, sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("command", sa.String(20), nullable=False),
    sa.Column("parameters", JSONType, nullable=False),
    # pending → done | rejected (acknowledged by the device) | expired (deadline passed)
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("deadline", UTCDateTime, nullable=False),
    sa.Column("settled_at", UTCDateTime, nullable=True),
    sa.Column("detail", sa.String(200), nullable=False),
)
# The expiry watch reads pending commands by deadline; a device's commands are listed newest first.
sa.Index("ix_device_commands_status", device_commands.c.status, device_commands.c.deadline)
sa.Index("ix_device_commands_device", device_commands.c.device_id, device_commands.c.issued_at)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
