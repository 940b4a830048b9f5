"""Loading and saving recipes, stock, reservations and tickets. Statements are built once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import one_of
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_rows, update_rows, upsert
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.kitchen.tables import ingredients, kitchen_meta, recipes, reservations, tickets

_RECIPES = sa.select(recipes).where(one_of(recipes.c.menu_item_id, "ids"))
_STOCK = sa.select(ingredients).where(one_of(ingredients.c.name, "names")).order_by(ingredients.c.name)
_ALL_STOCK = sa.select(ingredients).order_by(ingredients.c.name)
_ALL_STOCK_FOR_UPDATE = _ALL_STOCK.with_for_update()
_SET_LEVEL = ingredients.update().where(ingredients.c.name == sa.bindparam("n"))
_RESERVATIONS_OF = (
    sa.select(reservations)
    .where(one_of(reservations.c.order_id, "ids"))
    .order_by(reservations.c.order_id, reservations.c.ingredient)
    .with_for_update()
)
_SET_RESERVATIONS = (
    reservations.update()
    .where(reservations.c.order_id == sa.bindparam("oid"), reservations.c.status == sa.bindparam("from_status"))
    .values(status=sa.bindparam("to_status"), updated_at=sa.bindparam("at"))
)
# A run's orders' tickets and holdings are read locked (on PostgreSQL; SQLite has one writer at
# a time): a command decides on what it read (a queued ticket may be cancelled, a held
# reservation released), and the autopilot moving the same ticket on at the same moment must
# wait for that decision, or be waited for — not be overwritten by it. Tickets are locked
# before holdings, each in key order, as the autopilot takes them (no deadlock between them).
_TICKETS_OF = sa.select(tickets).where(one_of(tickets.c.order_id, "ids")).order_by(tickets.c.id).with_for_update()
_TICKETS = sa.select(tickets).where(one_of(tickets.c.id, "ids")).order_by(tickets.c.id).with_for_update()
_TICKET = sa.select(tickets).where(tickets.c.id == sa.bindparam("ticket_id"))
_TICKET_FOR_UPDATE = _TICKET.with_for_update()
_SET_TICKET = tickets.update().where(tickets.c.id == sa.bindparam("ticket_id"))


# -- recipes -------------------------------------------------------------------------------------


async def apply_recipe(
    conn: AsyncConnection,
    menu_item_id: UUID,
    name: str,
    recipe: Mapping[str, int],
    version: int,
    *,
    removed: bool = False,
) -> None:
    """Keep the newest version of an item's recipe (a late, older event changes nothing)."""
    await conn.execute(
        upsert(conn, recipes, ["menu_item_id"], only_if_newer="version"),
        {
            "menu_item_id": menu_item_id,
            "name": name,
            "ingredients": dict(recipe),
            "removed": removed,
            "version": version,
        },
    )


async def mark_recipe_removed(conn: AsyncConnection, menu_item_id: UUID, version: int) -> None:
    await conn.execute(
        recipes.update()
        .where(recipes.c.menu_item_id == menu_item_id, recipes.c.version < version)
        .values(removed=True, version=version)
    )


async def recipes_for(conn: AsyncConnection, ids: Iterable[UUID]) -> dict[UUID, dict[str, int]]:
    """Recipes of these items; a removed item still has its recipe (orders placed before)."""
    rows = await fetch_rows(conn, _RECIPES, {"ids": list(set(ids))})
    return {r.menu_item_id: dict(r.ingredients) for r in rows}


async def load_recipes(uow: UnitOfWork, ids: Iterable[UUID]) -> None:
    """The recipes a run of commands needs, at once (`recipes_for_run` then finds them)."""
    wanted = [i for i in set(ids) if uow.recall("recipe", i) is None]
    if wanted:
        for menu_item_id, recipe in (await recipes_for(uow.conn, wanted)).items():
            uow.remember("recipe", menu_item_id, recipe)


async def recipes_for_run(uow: UnitOfWork, ids: Iterable[UUID]) -> dict[UUID, dict[str, int]]:
    wanted = set(ids)
    await load_recipes(uow, wanted)
    return {i: r for i in wanted if (r := uow.recall("recipe", i)) is not None}


# -- stock ---------------------------------------------------------------------------------------


async def stock(conn: AsyncConnection, names: Iterable[str], *, for_update: bool = False) -> dict[str, Any]:
    """Ingredient rows, locked in name order on PostgreSQL so concurrent reservations never
    deadlock."""
    query = _STOCK.with_for_update() if for_update else _STOCK
    return {r.name: r for r in await conn.execute(query, {"names": sorted(set(names))})}


async def all_stock(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(_ALL_STOCK))


# -- what a unit of work changes: loaded once, changed in memory, written at commit -------------


@dataclass
class Level:
    """One ingredient's stock, as the transaction changes it (the row is locked)."""

    name: str
    on_hand: int
    reserved: int
    consumed: int


@dataclass
class Holding:
    """What is set aside for an order, one row per ingredient."""

    ingredient: str
    quantity: int
    status: str  # held | released | consumed
    #: Held in this transaction: its row is still to be inserted at commit.
    staged: bool = False


@dataclass
class Ticket:
    id: UUID
    order_id: UUID
    status: str
    traceparent: str | None


async def levels(uow: UnitOfWork) -> dict[str, Level]:
    """Every ingredient's stock, locked for the transaction (in name order on PostgreSQL, so
    concurrent transactions never deadlock); loaded once per transaction."""
    found: dict[str, Level] | None = uow.recall("levels", None)
    if found is None:
        rows = await fetch_rows(uow.conn, _ALL_STOCK_FOR_UPDATE)
        found = uow.remember("levels", None, {r.name: Level(r.name, r.on_hand, r.reserved, r.consumed) for r in rows})
    return found


def _changed(uow: UnitOfWork, level: Level, at: datetime) -> None:
    uow.stage(
        _write_levels,
        {
            "n": level.name,
            "on_hand": level.on_hand,
            "reserved": level.reserved,
            "consumed": level.consumed,
            "updated_at": at,
        },
        key=level.name,
    )


async def _write_levels(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await update_rows(conn, _SET_LEVEL, rows)


async def load_orders(uow: UnitOfWork, order_ids: Iterable[UUID]) -> None:
    """The holdings and tickets of a run's orders, at once; `held` and `ticket_for_order` then
    find them without a query."""
    wanted = [i for i in set(order_ids) if uow.recall("held", i) is None]
    if not wanted:
        return
    tickets_of: dict[UUID, Ticket | None] = dict.fromkeys(wanted)
    for r in await fetch_rows(uow.conn, _TICKETS_OF, {"ids": wanted}):
        tickets_of[r.order_id] = Ticket(r.id, r.order_id, r.status, r.traceparent)
    holdings: dict[UUID, list[Holding]] = {i: [] for i in wanted}
    for r in await fetch_rows(uow.conn, _RESERVATIONS_OF, {"ids": wanted}):
        holdings[r.order_id].append(Holding(r.ingredient, r.quantity, r.status))
    for order_id in wanted:
        uow.remember("held", order_id, holdings[order_id])
        uow.remember("ticket", order_id, tickets_of[order_id] or _NO_TICKET)


async def held(uow: UnitOfWork, order_id: UUID) -> list[Holding]:
    await load_orders(uow, [order_id])
    found: list[Holding] = uow.recall("held", order_id)
    return found


async def hold(uow: UnitOfWork, order_id: UUID, need: Mapping[str, int], at: datetime) -> None:
    stock = await levels(uow)
    holdings = await held(uow, order_id)
    for ingredient, quantity in need.items():
        level = stock[ingredient]
        level.on_hand -= quantity
        level.reserved += quantity
        _changed(uow, level, at)
        holding = Holding(ingredient, quantity, "held", staged=True)
        holdings.append(holding)
        _stage_insert(uow, order_id, holding, at)


def _stage_insert(uow: UnitOfWork, order_id: UUID, holding: Holding, at: datetime) -> None:
    uow.stage(
        _insert_reservations,
        {
            "order_id": order_id,
            "ingredient": holding.ingredient,
            "quantity": holding.quantity,
            "status": holding.status,
            "updated_at": at,
        },
        key=(order_id, holding.ingredient),
    )


async def _insert_reservations(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, reservations, rows, ignore=True)


async def _settle(uow: UnitOfWork, order_id: UUID, status: str, at: datetime) -> dict[str, int]:
    """Release or consume what is held for the order; returns what moved."""
    holdings = [h for h in await held(uow, order_id) if h.status == "held"]
    if not holdings:
        return {}
    stock = await levels(uow)
    stored = False
    for holding in holdings:
        level = stock[holding.ingredient]
        level.reserved -= holding.quantity
        if status == "released":
            level.on_hand += holding.quantity
        else:
            level.consumed += holding.quantity
        holding.status = status
        _changed(uow, level, at)
        if holding.staged:
            # Held earlier in this transaction (a run with the reserve and the release of one
            # order): its insert is staged, and may run after the update would; it takes the
            # new status instead.
            _stage_insert(uow, order_id, holding, at)
        else:
            stored = True
    if stored:
        uow.stage(_update_reservations, {"oid": order_id, "from_status": "held", "to_status": status, "at": at})
    return {h.ingredient: h.quantity for h in holdings}


async def _update_reservations(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await update_rows(conn, _SET_RESERVATIONS, rows)


async def release(uow: UnitOfWork, order_id: UUID, at: datetime) -> dict[str, int]:
    """Put back what is held for the order; returns what went back."""
    return await _settle(uow, order_id, "released", at)


async def consume(uow: UnitOfWork, order_id: UUID, at: datetime) -> dict[str, int]:
    """Cooking began: what is held for the order is used up."""
    return await _settle(uow, order_id, "consumed", at)


RELEASED_MARK = "*"  # the ingredient of the mark a release leaves when nothing was held


async def mark_released(uow: UnitOfWork, order_id: UUID, at: datetime) -> None:
    (await held(uow, order_id)).append(Holding(RELEASED_MARK, 0, "released"))
    uow.stage(
        _insert_reservations,
        {"order_id": order_id, "ingredient": RELEASED_MARK, "quantity": 0, "status": "released", "updated_at": at},
    )


async def set_on_hand(conn: AsyncConnection, name: str, on_hand: int, at: datetime) -> int:
    """Set the on-hand level (a delivery or a count); returns the change. What was received
    moves with it, so stock stays conserved."""
    current = (await stock(conn, [name], for_update=True)).get(name)
    if current is None:
        await conn.execute(
            ingredients.insert().values(
                name=name, on_hand=on_hand, reserved=0, consumed=0, received=on_hand, updated_at=at
            )
        )
        return on_hand
    delta = on_hand - current.on_hand
    await conn.execute(
        ingredients.update()
        .where(ingredients.c.name == name)
        .values(on_hand=on_hand, received=ingredients.c.received + delta, updated_at=at)
    )
    return int(delta)


# -- tickets -------------------------------------------------------------------------------------

_NO_TICKET = Ticket(UUID(int=0), UUID(int=0), "", None)  # remembered: looked up, not there


async def ticket_for_order(uow: UnitOfWork, order_id: UUID) -> Ticket | None:
    await load_orders(uow, [order_id])
    found: Ticket = uow.recall("ticket", order_id)
    return None if found is _NO_TICKET else found


async def lock_tickets(uow: UnitOfWork, ticket_ids: Iterable[UUID]) -> None:
    """Lock the tickets, in key order (before anything else the transaction locks), and keep
    their rows for `locked_ticket` to find without another query."""
    ids = sorted(set(ticket_ids))
    if not ids:
        return
    found = {r.id: r for r in await fetch_rows(uow.conn, _TICKETS, {"ids": ids})}
    for ticket_id in ids:
        uow.remember("ticket_row", ticket_id, found.get(ticket_id, _NO_ROW))


_NO_ROW = object()  # remembered: looked up, not there


async def locked_ticket(uow: UnitOfWork, ticket_id: UUID) -> Any:
    """A ticket's row, locked for the transaction (read now unless `lock_tickets` read it)."""
    found = uow.recall("ticket_row", ticket_id)
    if found is None:
        rows = await fetch_rows(uow.conn, _TICKET_FOR_UPDATE, {"ticket_id": ticket_id})
        found = rows[0] if rows else None
    return None if found is _NO_ROW else found


async def ticket(conn: AsyncConnection, ticket_id: UUID) -> Any:
    return (await conn.execute(_TICKET, {"ticket_id": ticket_id})).first()


def add_ticket(uow: UnitOfWork, values: dict[str, Any]) -> Ticket:
    """A new ticket for an order (written at commit)."""
    new = Ticket(values["id"], values["order_id"], values["status"], values.get("traceparent"))
    uow.stage(_insert_tickets, values)
    return uow.remember("ticket", new.order_id, new)


async def _insert_tickets(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, tickets, rows, ignore=True)


async def set_ticket_status(uow: UnitOfWork, current: Ticket, status: str, at: datetime) -> None:
    current.status = status
    uow.stage(_update_tickets, {"ticket_id": current.id, "status": status, "updated_at": at}, key=current.id)


async def _update_tickets(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await update_rows(conn, _SET_TICKET, rows)


async def tickets_by_status(
    conn: AsyncConnection, statuses: Iterable[str], limit: int, *, after: UUID | None = None
) -> list[Any]:
    """Tickets in `statuses`, oldest first (ids are time-ordered), after the ticket `after`."""
    query = sa.select(tickets).where(tickets.c.status.in_(list(statuses))).order_by(tickets.c.id).limit(limit)
    if after is not None:
        query = query.where(tickets.c.id > after)
    return list(await conn.execute(query))


_COOKING = (
    sa.select(tickets.c.id, tickets.c.updated_at)
    .where(tickets.c.status.in_(["queued", "preparing", "baking"]))
    .order_by(tickets.c.updated_at)
    .limit(sa.bindparam("limit"))
)


async def cooking(conn: AsyncConnection, limit: int) -> list[tuple[UUID, datetime]]:
    """Tickets still cooking, the longest in their stage first: (id, when the stage began)."""
    return [(r.id, r.updated_at) for r in await fetch_rows(conn, _COOKING, {"limit": limit})]


async def get_flag(conn: AsyncConnection, key: str) -> str | None:
    return (await conn.execute(sa.select(kitchen_meta.c.value).where(kitchen_meta.c.key == key))).scalar()


async def set_flag(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(kitchen_meta.insert().values(key=key, value=value))
