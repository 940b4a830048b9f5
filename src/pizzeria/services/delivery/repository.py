"""Loading and saving couriers and deliveries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.upsert import insert_ignore
from pizzeria.services.delivery.tables import couriers, deliveries, delivery_meta

_BY_ORDERS = sa.select(deliveries.c.id, deliveries.c.order_id).where(
    deliveries.c.order_id.in_(sa.bindparam("ids", expanding=True))
)
_DELIVERY = sa.select(deliveries).where(deliveries.c.id == sa.bindparam("delivery_id"))
_SET_DELIVERY = deliveries.update().where(deliveries.c.id == sa.bindparam("delivery_id"))
_FREE_COURIERS = sa.select(couriers).where(couriers.c.delivery_id.is_(None)).order_by(couriers.c.created_at)
_FREE_COURIER = _FREE_COURIERS.limit(1)
_WAITING = (
    sa.select(deliveries.c.id)
    .where(deliveries.c.status == "waiting")
    .order_by(deliveries.c.created_at)
    .limit(sa.bindparam("limit"))
)
_SET_COURIER = couriers.update().where(couriers.c.id == sa.bindparam("courier_id"))
_TAKE_COURIER = _SET_COURIER.values(delivery_id=sa.bindparam("delivery_id"))


async def by_orders(conn: AsyncConnection, order_ids: Iterable[UUID]) -> dict[UUID, UUID]:
    """order id → its delivery's id, for those of these orders that have one."""
    return {r.order_id: r.id for r in await conn.execute(_BY_ORDERS, {"ids": list(order_ids)})}


async def get(conn: AsyncConnection, delivery_id: UUID, *, for_update: bool = False) -> Any:
    query = _DELIVERY.with_for_update() if for_update else _DELIVERY
    return (await conn.execute(query, {"delivery_id": delivery_id})).first()


async def add_all(conn: AsyncConnection, new: list[dict[str, Any]], taken: list[dict[str, Any]]) -> None:
    """New deliveries, and the couriers they were given, one statement each."""
    if new:
        await conn.execute(insert_ignore(conn, deliveries), new)
    if taken:
        await conn.execute(_TAKE_COURIER, taken)


async def set_status(conn: AsyncConnection, delivery_id: UUID, at: datetime, **values: Any) -> None:
    await conn.execute(_SET_DELIVERY.values(updated_at=at, **values), {"delivery_id": delivery_id})


async def free_couriers(conn: AsyncConnection) -> list[Any]:
    """Every available courier, first free first, locked (PostgreSQL skips ones another
    transaction is assigning)."""
    query = _FREE_COURIERS.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else _FREE_COURIERS
    return list(await conn.execute(query))


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


async def waiting(conn: AsyncConnection, limit: int, *, claim: bool = False) -> list[UUID]:
    """Deliveries waiting for a courier, oldest first; `claim`: locked for the transaction,
    skipping those another transaction holds (PostgreSQL: another replica's dispatcher)."""
    query = _WAITING.with_for_update(skip_locked=True) if claim and conn.dialect.name == "postgresql" else _WAITING
    return [r.id for r in await conn.execute(query, {"limit": limit})]


async def listing(conn: AsyncConnection, statuses: list[str], limit: int, *, after: UUID | None = None) -> list[Any]:
    """Deliveries in `statuses`, oldest first (ids are time-ordered), after the delivery `after`."""
    query = sa.select(deliveries).where(deliveries.c.status.in_(statuses)).order_by(deliveries.c.id).limit(limit)
    if after is not None:
        query = query.where(deliveries.c.id > after)
    return list(await conn.execute(query))


_ON_THE_ROAD = (
    sa.select(deliveries.c.id, deliveries.c.updated_at)
    .where(deliveries.c.status.in_(["assigned", "out_for_delivery"]))
    .order_by(deliveries.c.updated_at)
    .limit(sa.bindparam("limit"))
)


async def on_the_road(conn: AsyncConnection, limit: int) -> list[tuple[UUID, datetime]]:
    """Deliveries under way, the longest in their stage first: (id, when the stage began)."""
    return [(r.id, r.updated_at) for r in await conn.execute(_ON_THE_ROAD, {"limit": limit})]


async def add_courier(conn: AsyncConnection, courier_id: UUID, name: str, at: datetime) -> None:
    await conn.execute(couriers.insert().values(id=courier_id, name=name, delivery_id=None, created_at=at))


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    return (await conn.execute(sa.select(delivery_meta.c.value).where(delivery_meta.c.key == key))).scalar()


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(delivery_meta.insert().values(key=key, value=value))
