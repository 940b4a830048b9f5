"""Loading and saving couriers and deliveries. Statements are built once.

What a transaction changes is loaded once (every delivery of a set in one query, locked),
changed in memory and written at commit, one statement per table for the whole set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import one_of
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_rows, update_rows
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.delivery.domain import DeliveryStatus
from pizzeria.services.delivery.tables import couriers, deliveries, delivery_meta

_BY_ORDERS = sa.select(deliveries.c.id, deliveries.c.order_id).where(one_of(deliveries.c.order_id, "ids"))
_DELIVERY = sa.select(deliveries).where(deliveries.c.id == sa.bindparam("delivery_id"))
# A set's deliveries, locked in key order (every transaction that locks several does so in it).
_DELIVERIES_FOR_UPDATE = (
    sa.select(deliveries).where(one_of(deliveries.c.id, "ids")).order_by(deliveries.c.id).with_for_update()
)
_SET_DELIVERY = deliveries.update().where(deliveries.c.id == sa.bindparam("delivery_id"))
# Skipping the couriers another transaction is assigning (PostgreSQL; SQLite, one writer at a
# time, renders no lock).
_FREE_COURIERS = (
    sa.select(couriers)
    .where(couriers.c.delivery_id.is_(None))
    .order_by(couriers.c.created_at)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_WAITING = (
    sa.select(deliveries)
    .where(deliveries.c.status == DeliveryStatus.WAITING.value)
    .order_by(deliveries.c.created_at)
    .limit(sa.bindparam("limit"))
)
# Skipping those another transaction holds (another replica's dispatcher; PostgreSQL only).
_WAITING_CLAIMED = _WAITING.with_for_update(skip_locked=True)
# How many deliveries there are to hand out (up to a limit): as many as wait, if a courier is free.
_ASSIGNABLE = sa.select(
    sa.case(
        (
            sa.exists().where(couriers.c.delivery_id.is_(None)),
            sa.select(sa.func.count())
            .select_from(_WAITING.with_only_columns(deliveries.c.id).subquery())
            .scalar_subquery(),
        ),
        else_=0,
    )
)
_TAKE_COURIER = (
    couriers.update().where(couriers.c.id == sa.bindparam("courier_id")).values(delivery_id=sa.bindparam("delivery_id"))
)


@dataclass
class Delivery:
    """A delivery as a transaction changes it (its row is locked since it was loaded)."""

    id: UUID
    order_id: UUID
    customer_id: str
    address: str
    courier_id: UUID | None
    status: DeliveryStatus
    updated_at: datetime
    traceparent: str | None


_KIND = "delivery"


def _loaded(uow: UnitOfWork, row: Any) -> Delivery:
    return uow.remember(
        _KIND,
        row.id,
        Delivery(
            row.id,
            row.order_id,
            row.customer_id,
            row.address,
            row.courier_id,
            DeliveryStatus(row.status),
            row.updated_at,
            row.traceparent,
        ),
    )


async def by_orders(conn: AsyncConnection, order_ids: Iterable[UUID]) -> dict[UUID, UUID]:
    """order id → its delivery's id, for those of these orders that have one."""
    return {r.order_id: r.id for r in await fetch_rows(conn, _BY_ORDERS, {"ids": list(order_ids)})}


async def get(conn: AsyncConnection, delivery_id: UUID) -> Any:
    """A delivery's row as it is now (to show it)."""
    rows = await fetch_rows(conn, _DELIVERY, {"delivery_id": delivery_id})
    return rows[0] if rows else None


async def load_many(uow: UnitOfWork, delivery_ids: Iterable[UUID]) -> None:
    """Load (and lock) every delivery of a set at once; `load` then finds them without a query."""
    wanted = [i for i in set(delivery_ids) if uow.recall(_KIND, i) is None]
    if wanted:
        for row in await fetch_rows(uow.conn, _DELIVERIES_FOR_UPDATE, {"ids": wanted}):
            _loaded(uow, row)


async def load(uow: UnitOfWork, delivery_id: UUID) -> Delivery | None:
    """The delivery, locked for the transaction (None: there is none)."""
    await load_many(uow, [delivery_id])
    found: Delivery | None = uow.recall(_KIND, delivery_id)
    return found


async def claim_waiting(uow: UnitOfWork, limit: int) -> list[Delivery]:
    """Deliveries waiting for a courier, oldest first, locked for the transaction (PostgreSQL
    skips those another transaction holds)."""
    return [_loaded(uow, row) for row in await fetch_rows(uow.conn, _WAITING_CLAIMED, {"limit": limit})]


async def assignable(conn: AsyncConnection, limit: int) -> int:
    """How many deliveries wait, up to `limit`, while a courier is free (0 when none is)."""
    rows = await fetch_rows(conn, _ASSIGNABLE, {"limit": limit})
    return int(rows[0][0] or 0) if rows else 0


def save(uow: UnitOfWork, delivery: Delivery) -> None:
    """Write the delivery's new state at commit, with every other delivery changed in the
    transaction, in one statement."""
    uow.stage(
        _write_deliveries,
        {
            "delivery_id": delivery.id,
            "status": delivery.status.value,
            "courier_id": delivery.courier_id,
            "updated_at": delivery.updated_at,
        },
        key=delivery.id,
    )


async def _write_deliveries(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await update_rows(conn, _SET_DELIVERY, rows)


def set_courier(uow: UnitOfWork, courier_id: UUID, delivery_id: UUID | None) -> None:
    """What the courier carries (None: free), written at commit with every other courier's."""
    uow.stage(_write_couriers, {"courier_id": courier_id, "delivery_id": delivery_id}, key=courier_id)


async def _write_couriers(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await update_rows(conn, _TAKE_COURIER, rows)


async def add_all(conn: AsyncConnection, new: list[dict[str, Any]], taken: list[dict[str, Any]]) -> None:
    """New deliveries, and the couriers they were given, one statement each."""
    if new:
        await insert_rows(conn, deliveries, new, ignore=True)
    if taken:
        await update_rows(conn, _TAKE_COURIER, taken)


async def free_couriers(conn: AsyncConnection, limit: int) -> list[Any]:
    """Up to `limit` available couriers, first free first, locked (PostgreSQL skips ones another
    transaction is assigning)."""
    return list(await fetch_rows(conn, _FREE_COURIERS, {"limit": limit}))


async def courier(conn: AsyncConnection, courier_id: UUID) -> Any:
    return (await conn.execute(sa.select(couriers).where(couriers.c.id == courier_id))).first()


async def all_couriers(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(sa.select(couriers).order_by(couriers.c.name)))


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
    return [(r.id, r.updated_at) for r in await fetch_rows(conn, _ON_THE_ROAD, {"limit": limit})]


async def add_courier(conn: AsyncConnection, courier_id: UUID, name: str, at: datetime) -> None:
    await conn.execute(couriers.insert().values(id=courier_id, name=name, delivery_id=None, created_at=at))


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    return (await conn.execute(sa.select(delivery_meta.c.value).where(delivery_meta.c.key == key))).scalar()


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(delivery_meta.insert().values(key=key, value=value))
