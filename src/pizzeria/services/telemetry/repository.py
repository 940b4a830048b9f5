"""Loading and saving readings, rollups, and telemetry's copies of devices and deliveries.

Statements are built once and run with parameters. A batch of readings is one insert (a
reading sent again is left out by the key, and the insert answers which went in: on PostgreSQL
one array per column, on SQLite a multi-row insert), and its rollups one more.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.statements import execute
from pizzeria.kit.upsert import insert_ignore, insert_rows
from pizzeria.services.telemetry.domain import Aggregate
from pizzeria.services.telemetry.tables import deliveries, devices, readings, rollups

_DEVICE = sa.select(devices).where(devices.c.id == sa.bindparam("device_id"))
_SET_DEVICE = devices.update().where(devices.c.id == sa.bindparam("device_id"))
_SET_CONFIG = (
    devices.update()
    .where(devices.c.id == sa.bindparam("device_id"), devices.c.config_version < sa.bindparam("version"))
    .values(target_c=sa.bindparam("target_c"), config_version=sa.bindparam("version"), oven_state=sa.bindparam("state"))
)
_TRACKER_OF = sa.select(devices).where(devices.c.courier_id == sa.bindparam("courier_id"), devices.c.kind == "tracker")
_DELIVERY = sa.select(deliveries).where(deliveries.c.order_id == sa.bindparam("order_id"))
# (An update's parameters may not take a column's name.)
_SET_DELIVERY = deliveries.update().where(deliveries.c.order_id == sa.bindparam("the_order"))
_OUT_WITH = sa.select(deliveries).where(
    deliveries.c.courier_id == sa.bindparam("courier_id"), deliveries.c.status == "out"
)
_COMPLETE = (
    deliveries.update()
    .where(deliveries.c.order_id == sa.bindparam("the_order"), deliveries.c.status == "out")
    .values(status="delivered", delivered_at=sa.bindparam("at"))
)
_READINGS = (
    sa.select(readings)
    .where(
        readings.c.device_id == sa.bindparam("device_id"),
        readings.c.at_ms >= sa.bindparam("since"),
        readings.c.at_ms < sa.bindparam("until"),
    )
    .order_by(readings.c.at_ms)
    .limit(sa.bindparam("limit"))
)
_ROLLUPS = (
    sa.select(rollups)
    .where(
        rollups.c.device_id == sa.bindparam("device_id"),
        rollups.c.minute_ms >= sa.bindparam("since"),
        rollups.c.minute_ms < sa.bindparam("until"),
    )
    .order_by(rollups.c.minute_ms, rollups.c.metric)
    .limit(sa.bindparam("limit"))
)
_DEVICE_IDS = sa.select(devices.c.id).order_by(devices.c.id)


# -- readings and rollups -------------------------------------------------------------------------


@functools.cache
def _insert_readings(dialect: str) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(readings).on_conflict_do_nothing().returning(readings.c.at_ms)


#: The readings' values, as PostgreSQL takes them in one array each.
_COLUMNS = (
    ("at_ms", "bigint"),
    ("temperature_c", "float8"),
    ("door_open", "boolean"),
    ("lat", "float8"),
    ("lon", "float8"),
    ("speed_mps", "float8"),
    ("battery_pct", "float8"),
)
# On PostgreSQL a batch goes in as one array per column, unnested into rows: one statement
# with eight parameters however many readings it carries (a multi-row VALUES list has one
# parameter per value, each bound and rendered by the client: twice the client's CPU).
_ARRAYS = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _COLUMNS)
_INSERT_UNNESTED = sa.text(
    f"INSERT INTO readings (device_id, {', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT CAST(:device_id AS uuid), * FROM unnest({_ARRAYS}) ON CONFLICT DO NOTHING RETURNING at_ms"
)


async def add_readings(conn: AsyncConnection, device_id: UUID, rows: list[dict[str, Any]]) -> set[int]:
    """Store the rows (one statement); the times (ms) of those that were not stored before."""
    if conn.dialect.name == "postgresql":
        columns = {name: [row[name] for row in rows] for name, _ in _COLUMNS}
        result = await conn.execute(_INSERT_UNNESTED, {"device_id": device_id, **columns})
    else:
        for row in rows:
            row["device_id"] = device_id
        result = await conn.execute(_insert_readings(conn.dialect.name), rows)
    return {at_ms for (at_ms,) in result}


@functools.cache
def _merge_rollups(dialect: str) -> sa.Insert:
    """Fold a minute's new aggregate into the one stored (min of the lows, max of the highs,
    sums added): the order the readings come in does not matter."""
    stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(rollups)
    # SQLite's min and max of two arguments are scalar functions, PostgreSQL's least and greatest.
    lowest, highest = (sa.func.least, sa.func.greatest) if dialect == "postgresql" else (sa.func.min, sa.func.max)
    merged: sa.Insert = stmt.on_conflict_do_update(
        index_elements=["device_id", "metric", "minute_ms"],
        set_={
            "low": lowest(rollups.c.low, stmt.excluded.low),
            "high": highest(rollups.c.high, stmt.excluded.high),
            "total": rollups.c.total + stmt.excluded.total,
            "count": rollups.c.count + stmt.excluded.count,
        },
    )
    return merged


async def merge_rollups(conn: AsyncConnection, device_id: UUID, found: Mapping[tuple[str, int], Aggregate]) -> None:
    if not found:
        return
    await conn.execute(
        _merge_rollups(conn.dialect.name),
        [
            {
                "device_id": device_id,
                "metric": metric,
                "minute_ms": minute,
                "low": a.low,
                "high": a.high,
                "total": a.total,
                "count": a.count,
            }
            for (metric, minute), a in found.items()
        ],
    )


async def readings_between(conn: AsyncConnection, device_id: UUID, since: int, until: int, limit: int) -> list[Any]:
    params = {"device_id": device_id, "since": since, "until": until, "limit": limit}
    return list(await conn.execute(_READINGS, params))


async def rollups_between(conn: AsyncConnection, device_id: UUID, since: int, until: int, limit: int) -> list[Any]:
    params = {"device_id": device_id, "since": since, "until": until, "limit": limit}
    return list(await conn.execute(_ROLLUPS, params))


async def device_ids(conn: AsyncConnection) -> list[UUID]:
    return [row.id for row in await conn.execute(_DEVICE_IDS)]


async def oldest(conn: AsyncConnection, table: sa.Table, device_id: UUID) -> int | None:
    """The time (ms) of a device's oldest row in `table` (readings or rollups; None: none)."""
    time_column = table.c.at_ms if table is readings else table.c.minute_ms
    first: int | None = (
        await conn.execute(sa.select(sa.func.min(time_column)).where(table.c.device_id == device_id))
    ).scalar()
    return first


async def delete_before(conn: AsyncConnection, table: sa.Table, device_id: UUID, cutoff: int, chunk: int) -> int:
    """Delete up to about `chunk` of a device's rows older than `cutoff` (ms), the oldest first
    (a write lock is never held for a whole backlog); how many went."""
    time_column = table.c.at_ms if table is readings else table.c.minute_ms
    mine = table.c.device_id == device_id
    bound = (
        await conn.execute(
            sa.select(time_column).where(mine, time_column < cutoff).order_by(time_column).offset(chunk).limit(1)
        )
    ).scalar()
    result = await conn.execute(table.delete().where(mine, time_column < (cutoff if bound is None else bound)))
    return result.rowcount or 0


# -- devices --------------------------------------------------------------------------------------


async def device(conn: AsyncConnection, device_id: UUID, *, for_update: bool = False) -> Any:
    query = _DEVICE.with_for_update() if for_update else _DEVICE
    return (await conn.execute(query, {"device_id": device_id})).first()


async def devices_listing(conn: AsyncConnection, kind: str | None, limit: int) -> list[Any]:
    query = sa.select(devices).order_by(devices.c.kind, devices.c.station, devices.c.id).limit(limit)
    if kind is not None:
        query = query.where(devices.c.kind == kind)
    return list(await conn.execute(query))


async def readings_since(conn: AsyncConnection, since_ms: int) -> tuple[int, int]:
    """Readings taken at `since_ms` or later (by the devices' clocks), and how many devices sent
    them: one range of the (device, time) key per device, no scan of the series."""
    ids = [r.id for r in await conn.execute(sa.select(devices.c.id))]
    if not ids:
        return 0, 0
    query = (
        sa.select(readings.c.device_id, sa.func.count())
        .where(readings.c.device_id.in_(ids), readings.c.at_ms >= since_ms)
        .group_by(readings.c.device_id)
    )
    counts = [row[1] for row in await conn.execute(query)]
    return sum(counts), len(counts)


async def tracker_of(conn: AsyncConnection, courier_id: str) -> Any:
    return (await conn.execute(_TRACKER_OF, {"courier_id": courier_id})).first()


async def add_devices(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(insert_ignore(conn, devices), rows)


async def update_device(conn: AsyncConnection, device_id: UUID, **values: Any) -> None:
    await conn.execute(_SET_DEVICE.values(**values), {"device_id": device_id})


async def set_configuration(
    conn: AsyncConnection, device_id: UUID, *, target_c: float | None, version: int, state: str
) -> None:
    """A newer desired configuration (an older one, come late, changes nothing)."""
    await conn.execute(_SET_CONFIG, {"device_id": device_id, "target_c": target_c, "version": version, "state": state})


# -- deliveries -----------------------------------------------------------------------------------


async def delivery(conn: AsyncConnection, order_id: UUID) -> Any:
    return (await conn.execute(_DELIVERY, {"order_id": order_id})).first()


async def out_with(conn: AsyncConnection, courier_id: str) -> list[Any]:
    """The deliveries the courier is out with (usually one)."""
    return list(await conn.execute(_OUT_WITH, {"courier_id": courier_id}))


async def add_deliveries(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, deliveries, rows, ignore=True)


async def update_delivery(conn: AsyncConnection, order_id: UUID, **values: Any) -> None:
    await conn.execute(_SET_DELIVERY.values(**values), {"the_order": order_id})


async def complete_delivery(conn: AsyncConnection, order_id: UUID, at: datetime) -> None:
    await execute(conn, _COMPLETE, {"the_order": order_id, "at": at})
