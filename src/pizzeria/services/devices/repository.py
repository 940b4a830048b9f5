"""Loading and saving devices and their commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.statements import fetch_rows
from pizzeria.services.devices.tables import device_commands, devices

_DEVICE = sa.select(devices).where(devices.c.id == sa.bindparam("device_id"))
_SET_DEVICE = devices.update().where(devices.c.id == sa.bindparam("device_id"))
_COMMAND = sa.select(device_commands).where(
    device_commands.c.id == sa.bindparam("command_id"), device_commands.c.device_id == sa.bindparam("device_id")
)
_SET_COMMAND = device_commands.update().where(device_commands.c.id == sa.bindparam("command_id"))
_ONLINE = (
    sa.select(devices.c.id, devices.c.last_seen_at)
    .where(devices.c.online.is_(True))
    .order_by(devices.c.last_seen_at)
    .limit(sa.bindparam("limit"))
)
_PENDING = (
    sa.select(device_commands.c.id, device_commands.c.deadline)
    .where(device_commands.c.status == "pending")
    .order_by(device_commands.c.deadline)
    .limit(sa.bindparam("limit"))
)


async def get(conn: AsyncConnection, device_id: UUID, *, for_update: bool = False) -> Any:
    query = _DEVICE.with_for_update() if for_update else _DEVICE
    return (await conn.execute(query, {"device_id": device_id})).first()


async def listing(
    conn: AsyncConnection, *, kind: str | None, station: str | None, courier_id: str | None, limit: int
) -> list[Any]:
    query = sa.select(devices).order_by(devices.c.kind, devices.c.name).limit(limit)
    if kind is not None:
        query = query.where(devices.c.kind == kind)
    if station is not None:
        query = query.where(devices.c.station == station)
    if courier_id is not None:
        query = query.where(devices.c.courier_id == courier_id)
    return list(await conn.execute(query))


async def taken(conn: AsyncConnection, name: str, courier_id: str | None) -> Any:
    """A device already named `name`, or already carried by `courier_id` (None if neither)."""
    clash = devices.c.name == name
    if courier_id is not None:
        clash = sa.or_(clash, devices.c.courier_id == courier_id)
    return (await conn.execute(sa.select(devices.c.name, devices.c.courier_id).where(clash).limit(1))).first()


async def add(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(devices.insert().values(**values))


async def update(conn: AsyncConnection, device_id: UUID, **values: Any) -> None:
    await conn.execute(_SET_DEVICE.values(**values), {"device_id": device_id})


async def online_by_silence(conn: AsyncConnection, limit: int) -> list[tuple[UUID, datetime]]:
    """Online devices, the longest silent first: (id, when it was last heard from)."""
    return [(r.id, r.last_seen_at) for r in await fetch_rows(conn, _ONLINE, {"limit": limit})]


async def command(conn: AsyncConnection, device_id: UUID, command_id: UUID, *, for_update: bool = False) -> Any:
    query = _COMMAND.with_for_update() if for_update else _COMMAND
    return (await conn.execute(query, {"device_id": device_id, "command_id": command_id})).first()


async def command_by_id(conn: AsyncConnection, command_id: UUID) -> Any:
    query = sa.select(device_commands).where(device_commands.c.id == command_id).with_for_update()
    return (await conn.execute(query)).first()


async def commands(conn: AsyncConnection, device_id: UUID, limit: int) -> list[Any]:
    query = (
        sa.select(device_commands)
        .where(device_commands.c.device_id == device_id)
        .order_by(device_commands.c.issued_at.desc(), device_commands.c.id.desc())
        .limit(limit)
    )
    return list(await conn.execute(query))


async def add_command(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(device_commands.insert().values(**values))


async def settle_command(conn: AsyncConnection, command_id: UUID, **values: Any) -> None:
    await conn.execute(_SET_COMMAND.values(**values), {"command_id": command_id})


async def pending_of(conn: AsyncConnection, device_id: UUID, now: datetime, limit: int) -> list[Any]:
    """A device's commands still waiting for its acknowledgement (deadline not passed), oldest first."""
    query = (
        sa.select(device_commands)
        .where(
            device_commands.c.device_id == device_id,
            device_commands.c.status == "pending",
            device_commands.c.deadline > now,
        )
        .order_by(device_commands.c.issued_at)
        .limit(limit)
    )
    return list(await conn.execute(query))


async def pending_by_deadline(conn: AsyncConnection, limit: int) -> list[tuple[UUID, datetime]]:
    """Commands waiting for their acknowledgement, the nearest deadline first: (id, deadline)."""
    return [(r.id, r.deadline) for r in await fetch_rows(conn, _PENDING, {"limit": limit})]
