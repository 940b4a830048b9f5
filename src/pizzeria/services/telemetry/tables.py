"""Telemetry tables: the readings (a time series), their per-minute rollups, and what telemetry
keeps of the devices and the deliveries under way, copied from their owners' events."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pizzeria.kit.db import UTCDateTime
from pizzeria.kit.migrations import MigrationSet

metadata = sa.MetaData()

# Append-only. The key is the time series' index: a device's readings in time order (a range
# of them is one index scan), and a reading sent again meets its own key and is left out.
# Times are milliseconds since the epoch (UTC), the device's own. SQLite keeps the rows in the
# key's order (no rowid): a device's range is read from neighbouring pages.
readings = sa.Table(
    "readings",
    metadata,
    sa.Column("device_id", sa.Uuid, primary_key=True),
    sa.Column("at_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("temperature_c", sa.Float, nullable=True),
    sa.Column("door_open", sa.Boolean, nullable=True),
    sa.Column("lat", sa.Float, nullable=True),
    sa.Column("lon", sa.Float, nullable=True),
    sa.Column("speed_mps", sa.Float, nullable=True),
    sa.Column("battery_pct", sa.Float, nullable=True),
    sqlite_with_rowid=False,
)

# One row per device, value and minute: the lowest, highest, sum and count of the value's
# readings in that minute (a door's share of the minute open is its sum over its count).
rollups = sa.Table(
    "rollups",
    metadata,
    sa.Column("device_id", sa.Uuid, primary_key=True),
    sa.Column("metric", sa.String(16), primary_key=True),
    sa.Column("minute_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("low", sa.Float, nullable=False),
    sa.Column("high", sa.Float, nullable=False),
    sa.Column("total", sa.Float, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

# The devices telemetry knows (from devices' events), with what it follows of each: an oven's
# range and state, when devices last heard it was alive, and the newest reading's values (the
# latest position of a courier is one row away).
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("station", sa.String(40), nullable=True),
    sa.Column("courier_id", sa.String(64), nullable=True),
    sa.Column("key_digest", sa.String(64), nullable=False),
    # An oven's desired temperature (devices' DeviceConfigurationChanged, version kept to
    # ignore a late older one) and where its readings stand against it (domain.OvenState).
    sa.Column("target_c", sa.Float, nullable=True),
    sa.Column("config_version", sa.Integer, nullable=False),
    sa.Column("oven_state", sa.String(10), nullable=False),
    # When devices was last told that the device was heard from (DeviceSeen).
    sa.Column("announced_at", UTCDateTime, nullable=True),
    # The newest reading (by the device's time) and when it came.
    sa.Column("last_at_ms", sa.BigInteger, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=True),
    sa.Column("temperature_c", sa.Float, nullable=True),
    sa.Column("door_open", sa.Boolean, nullable=True),
    sa.Column("lat", sa.Float, nullable=True),
    sa.Column("lon", sa.Float, nullable=True),
    sa.Column("speed_mps", sa.Float, nullable=True),
    sa.Column("battery_pct", sa.Float, nullable=True),
    sa.Column("registered_at", UTCDateTime, nullable=False),
)
# A courier's tracker is found by the courier.
sa.Index("ix_devices_courier", devices.c.courier_id)

# Deliveries under way (from delivery's events): where the order goes, who carries it, and
# what was announced of its arrival.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("order_id", sa.Uuid, primary_key=True),
    sa.Column("delivery_id", sa.Uuid, nullable=False),
    sa.Column("courier_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("dest_lat", sa.Float, nullable=True),
    sa.Column("dest_lon", sa.Float, nullable=True),
    # out (for delivery) → delivered
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("picked_up_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    # CourierArriving went out (once per delivery), and the last estimate announced.
    sa.Column("arriving_at", UTCDateTime, nullable=True),
    sa.Column("eta_s", sa.Integer, nullable=True),
    sa.Column("distance_m", sa.Float, nullable=True),
    sa.Column("eta_at", UTCDateTime, nullable=True),
)
# A courier's order out for delivery is found by the courier.
sa.Index("ix_deliveries_courier", deliveries.c.courier_id, deliveries.c.status)

#: The history that makes these tables (version table `alembic_version`; the messaging tables
#: beside them have their own).
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)
