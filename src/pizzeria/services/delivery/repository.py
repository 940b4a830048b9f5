"""Loading and saving couriers and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.upsert import insert_ignore
from pizzeria.services.delivery.tables import couriers, deliveries, delivery_meta

_BY_ORDER = sa.select(deliveries).where(deliveries.c.order_id == sa.bindparam("order_id"))
_DELIVERY = sa.select(deliveries).where(deliveries.c.id == sa.bindparam("delivery_id"))
_SET_DELIVERY = deliveries.update().where(deliveries.c.id == sa.bindparam("delivery_id"))
_FREE_COURIER = sa.select(couriers).where(couriers.c.delivery_id.is_(None)).order_by(couriers.c.created_at).limit(1)
_WAITING = (sa.select(deliveries.c.id).where(deliveries.c.status == "waiting")
            .order_by(deliveries.c.created_at).limit(sa.bindparam("limit")))
_SET_COURIER = couriers.update().where(couriers.c.id == sa.bindparam("courier_id"))


async def by_order(conn: AsyncConnection, order_id: UUID) -> Any:
    return (await conn.execute(_BY_ORDER, {"order_id": order_id})).first()


async def get(conn: AsyncConnection, delivery_id: UUID, *, for_update: bool = False) -> Any:
    query = _DELIVERY.with_for_update() if for_update else _DELIVERY
    return (await conn.execute(query, {"delivery_id": delivery_id})).first()


async def add(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    return (await conn.execute(insert_ignore(conn, deliveries), values)).rowcount == 1


async def set_status(conn: AsyncConnection, delivery_id: UUID, at: datetime, **values: Any) -> None:
    await conn.execute(_SET_DELIVERY.values(updated_at=at, **values), {"delivery_id": delivery_id})


async def free_courier(conn: AsyncConnection) -> Any:
    """An available courier, locked (PostgreSQL skips ones another transaction is assigning)."""
    query = _FREE_COURIER.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else _FREE_COURIER
    return (await conn.execute(query)).first()


async def set_courier(conn: AsyncConnection, courier_id: UUID, delivery_id: UUID | None) -> None:
    await conn.execute(_SET_COURIER.values(delivery_id=delivery_id), {"courier_id": courier_id})


async def courier(conn: AsyncConnection, courier_id: UUID) -> Any:
    return (await conn.execute(sa.select(couriers).where(couriers.c.id == courier_id))).first()


async def all_couriers(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(sa.select(couriers).order_by(couriers.c.name)))


async def waiting(conn: AsyncConnection, limit: int) -> list[UUID]:
    return [r.id for r in await conn.execute(_WAITING, {"limit": limit})]


async def listing(conn: AsyncConnection, statuses: list[str], limit: int) -> list[Any]:
    query = (sa.select(deliveries).where(deliveries.c.status.in_(statuses))
             .order_by(deliveries.c.created_at).limit(limit))
    return list(await conn.execute(query))


async def due(conn: AsyncConnection, before: datetime, limit: int) -> list[UUID]:
    """Deliveries on the road whose current stage began before `before` (for the autopilot)."""
    query = (sa.select(deliveries.c.id).where(deliveries.c.status.in_(["assigned", "out_for_delivery"]),
                                              deliveries.c.updated_at <= before)
             .order_by(deliveries.c.updated_at).limit(limit))
    return [r.id for r in await conn.execute(query)]


async def add_courier(conn: AsyncConnection, courier_id: UUID, name: str, at: datetime) -> None:
    await conn.execute(couriers.insert().values(id=courier_id, name=name, delivery_id=None, created_at=at))


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    return (await conn.execute(sa.select(delivery_meta.c.value).where(delivery_meta.c.key == key))).scalar()


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(delivery_meta.insert().values(key=key, value=value))
