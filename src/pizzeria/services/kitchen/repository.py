"""Loading and saving recipes, stock, reservations and tickets. Statements are built once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.upsert import insert_ignore, upsert
from pizzeria.services.kitchen.tables import ingredients, kitchen_meta, recipes, reservations, tickets

_RECIPES = sa.select(recipes).where(recipes.c.menu_item_id.in_(sa.bindparam("ids", expanding=True)))
_STOCK = sa.select(ingredients).where(ingredients.c.name.in_(sa.bindparam("names", expanding=True))).order_by(
    ingredients.c.name
)
_ALL_STOCK = sa.select(ingredients).order_by(ingredients.c.name)
_HOLD = ingredients.update().where(ingredients.c.name == sa.bindparam("n")).values(
    on_hand=ingredients.c.on_hand - sa.bindparam("q"), reserved=ingredients.c.reserved + sa.bindparam("q"),
    updated_at=sa.bindparam("at"),
)
_UNHOLD = ingredients.update().where(ingredients.c.name == sa.bindparam("n")).values(
    on_hand=ingredients.c.on_hand + sa.bindparam("q"), reserved=ingredients.c.reserved - sa.bindparam("q"),
    updated_at=sa.bindparam("at"),
)
_CONSUME = ingredients.update().where(ingredients.c.name == sa.bindparam("n")).values(
    reserved=ingredients.c.reserved - sa.bindparam("q"), consumed=ingredients.c.consumed + sa.bindparam("q"),
    updated_at=sa.bindparam("at"),
)
_RESERVATIONS = sa.select(reservations).where(reservations.c.order_id == sa.bindparam("order_id"))
_INSERT_RESERVATION = reservations.insert()
_SET_RESERVATIONS = reservations.update().where(
    reservations.c.order_id == sa.bindparam("oid"), reservations.c.status == sa.bindparam("from_status")
)
_TICKET_BY_ORDER = sa.select(tickets).where(tickets.c.order_id == sa.bindparam("order_id"))
_TICKET = sa.select(tickets).where(tickets.c.id == sa.bindparam("ticket_id"))
_SET_TICKET = tickets.update().where(tickets.c.id == sa.bindparam("ticket_id"))


# -- recipes -------------------------------------------------------------------------------------

async def apply_recipe(conn: AsyncConnection, menu_item_id: UUID, name: str, recipe: Mapping[str, int],
                       version: int, *, removed: bool = False) -> None:
    """Keep the newest version of an item's recipe (a late, older event changes nothing)."""
    await conn.execute(upsert(conn, recipes, ["menu_item_id"], only_if_newer="version"), {
        "menu_item_id": menu_item_id, "name": name, "ingredients": dict(recipe), "removed": removed,
        "version": version})


async def mark_recipe_removed(conn: AsyncConnection, menu_item_id: UUID, version: int) -> None:
    await conn.execute(recipes.update().where(recipes.c.menu_item_id == menu_item_id, recipes.c.version < version)
                       .values(removed=True, version=version))


async def recipes_for(conn: AsyncConnection, ids: Iterable[UUID]) -> dict[UUID, dict[str, int]]:
    """Recipes of these items; a removed item still has its recipe (orders placed before)."""
    rows = await conn.execute(_RECIPES, {"ids": list(set(ids))})
    return {r.menu_item_id: dict(r.ingredients) for r in rows}


# -- stock ---------------------------------------------------------------------------------------

async def stock(conn: AsyncConnection, names: Iterable[str], *, for_update: bool = False) -> dict[str, Any]:
    """Ingredient rows, locked in name order on PostgreSQL so concurrent reservations never
    deadlock."""
    query = _STOCK.with_for_update() if for_update else _STOCK
    return {r.name: r for r in await conn.execute(query, {"names": sorted(set(names))})}


async def all_stock(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(_ALL_STOCK))


async def hold(conn: AsyncConnection, order_id: UUID, need: Mapping[str, int], at: datetime) -> None:
    await conn.execute(_HOLD, [{"n": i, "q": q, "at": at} for i, q in need.items()])
    await conn.execute(_INSERT_RESERVATION, [
        {"order_id": order_id, "ingredient": i, "quantity": q, "status": "held", "updated_at": at}
        for i, q in need.items()
    ])


async def held(conn: AsyncConnection, order_id: UUID) -> list[Any]:
    return list(await conn.execute(_RESERVATIONS, {"order_id": order_id}))


async def release(conn: AsyncConnection, order_id: UUID, at: datetime) -> dict[str, int]:
    """Put back what is held for the order; returns what went back."""
    rows = [r for r in await held(conn, order_id) if r.status == "held"]
    if rows:
        await stock(conn, [r.ingredient for r in rows], for_update=True)
        await conn.execute(_UNHOLD, [{"n": r.ingredient, "q": r.quantity, "at": at} for r in rows])
        await conn.execute(_SET_RESERVATIONS.values(status="released", updated_at=at),
                           {"oid": order_id, "from_status": "held"})
    return {r.ingredient: r.quantity for r in rows}


RELEASED_MARK = "*"  # the ingredient of the mark a release leaves when nothing was held


async def mark_released(conn: AsyncConnection, order_id: UUID, at: datetime) -> None:
    await conn.execute(insert_ignore(conn, reservations), {
        "order_id": order_id, "ingredient": RELEASED_MARK, "quantity": 0, "status": "released", "updated_at": at})


async def consume(conn: AsyncConnection, order_id: UUID, at: datetime) -> dict[str, int]:
    """Cooking began: what is held for the order is used up."""
    rows = [r for r in await held(conn, order_id) if r.status == "held"]
    if rows:
        await stock(conn, [r.ingredient for r in rows], for_update=True)
        await conn.execute(_CONSUME, [{"n": r.ingredient, "q": r.quantity, "at": at} for r in rows])
        await conn.execute(_SET_RESERVATIONS.values(status="consumed", updated_at=at),
                           {"oid": order_id, "from_status": "held"})
    return {r.ingredient: r.quantity for r in rows}


async def set_on_hand(conn: AsyncConnection, name: str, on_hand: int, at: datetime) -> int:
    """Set the on-hand level (a delivery or a count); returns the change. What was received
    moves with it, so stock stays conserved."""
    current = (await stock(conn, [name], for_update=True)).get(name)
    if current is None:
        await conn.execute(ingredients.insert().values(name=name, on_hand=on_hand, reserved=0, consumed=0,
                                                       received=on_hand, updated_at=at))
        return on_hand
    delta = on_hand - current.on_hand
    await conn.execute(ingredients.update().where(ingredients.c.name == name).values(
        on_hand=on_hand, received=ingredients.c.received + delta, updated_at=at))
    return int(delta)


# -- tickets -------------------------------------------------------------------------------------

async def ticket_for_order(conn: AsyncConnection, order_id: UUID) -> Any:
    return (await conn.execute(_TICKET_BY_ORDER, {"order_id": order_id})).first()


async def ticket(conn: AsyncConnection, ticket_id: UUID, *, for_update: bool = False) -> Any:
    query = _TICKET.with_for_update() if for_update else _TICKET
    return (await conn.execute(query, {"ticket_id": ticket_id})).first()


async def add_ticket(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    return (await conn.execute(insert_ignore(conn, tickets), values)).rowcount == 1


async def set_ticket_status(conn: AsyncConnection, ticket_id: UUID, status: str, at: datetime) -> None:
    await conn.execute(_SET_TICKET.values(status=status, updated_at=at), {"ticket_id": ticket_id})


async def tickets_by_status(conn: AsyncConnection, statuses: Iterable[str], limit: int) -> list[Any]:
    query = (sa.select(tickets).where(tickets.c.status.in_(list(statuses)))
             .order_by(tickets.c.created_at).limit(limit))
    return list(await conn.execute(query))


async def tickets_due(conn: AsyncConnection, before: datetime, limit: int) -> list[Any]:
    """Tickets still cooking whose current stage began before `before` (for the autopilot)."""
    query = (sa.select(tickets.c.id).where(tickets.c.status.in_(["queued", "preparing", "baking"]),
                                           tickets.c.updated_at <= before)
             .order_by(tickets.c.updated_at).limit(limit))
    return [r.id for r in await conn.execute(query)]


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    return (await conn.execute(sa.select(kitchen_meta.c.value).where(kitchen_meta.c.key == key))).scalar()


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(kitchen_meta.insert().values(key=key, value=value))
