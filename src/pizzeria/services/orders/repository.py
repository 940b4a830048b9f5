"""Loading and saving orders and the menu copy (the only module that knows the tables).

Hot statements are built once and executed with parameters: building a SQLAlchemy statement
per call costs more than the database takes to run it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import one_of
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_rows, update_rows, upsert
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.orders.domain import Line, MenuEntry, Order, PaymentStatus, Status
from pizzeria.services.orders.tables import idempotency_keys, menu_copy, order_history, order_lines, orders

_UPDATE_ORDER = orders.update().where(orders.c.id == sa.bindparam("order_id"))
_ORDER = sa.select(orders).where(orders.c.id == sa.bindparam("order_id"))
_ORDER_FOR_UPDATE = _ORDER.with_for_update()
_ORDERS = sa.select(orders).where(one_of(orders.c.id, "ids"))
_ORDERS_FOR_UPDATE = _ORDERS.with_for_update()
_KIND = "order"
_LINES = sa.select(order_lines).where(one_of(order_lines.c.order_id, "ids")).order_by(order_lines.c.line_no)
_HISTORY = sa.select(order_history).where(one_of(order_history.c.order_id, "ids")).order_by(order_history.c.seq)
_HISTORY_LAST = (
    sa.select(order_history.c.order_id, sa.func.max(order_history.c.seq).label("last"))
    .where(one_of(order_history.c.order_id, "ids"))
    .group_by(order_history.c.order_id)
)
_MENU = sa.select(menu_copy).where(one_of(menu_copy.c.id, "ids"))
# The keys used before of a set's (customer, key) pairs (every key of those customers named in
# the set: the pairs are picked out in Python), each with 0 unpaid; and, where the unpaid orders
# are counted too, a row of each customer with pending orders: no key, and their number. One
# statement, so one round trip for both.
_KEYS = sa.select(
    idempotency_keys.c.customer_id,
    idempotency_keys.c.key,
    idempotency_keys.c.request_hash,
    idempotency_keys.c.order_id,
    sa.literal(0, sa.Integer).label("unpaid"),
).where(one_of(idempotency_keys.c.customer_id, "customers"), one_of(idempotency_keys.c.key, "keys"))
_KEYS_AND_UNPAID = sa.union_all(
    _KEYS,
    sa.select(
        orders.c.customer_id,
        sa.null().cast(idempotency_keys.c.key.type),
        sa.null().cast(idempotency_keys.c.request_hash.type),
        sa.null().cast(idempotency_keys.c.order_id.type),
        sa.func.count().label("unpaid"),
    )
    .where(one_of(orders.c.customer_id, "customers"), orders.c.status == Status.PENDING.value)
    .group_by(orders.c.customer_id),
)
# Each name's lock in the array's order (PostgreSQL: a function scan of an array yields it in
# order), and the menu entries, in one round trip: the locks' count (one row, whatever the names)
# is the preserved side of an outer join to the entries, so every lock is taken whether or not
# an entry matches, and before the entries are read (the outer side of the join).
_LOCK = sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(sa.column("name"), 0))
_NAMES = sa.func.unnest(sa.bindparam("names", type_=ARRAY(sa.Text))).alias("name")
_LOCKS_TAKEN = sa.select(sa.func.count(_LOCK).label("locks")).select_from(_NAMES).subquery("locks")
_LOCKS_AND_MENU = sa.select(_LOCKS_TAKEN.c.locks, *menu_copy.c).select_from(
    _LOCKS_TAKEN.outerjoin(menu_copy, one_of(menu_copy.c.id, "ids"))
)


def _order_values(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "payment_status": order.payment_status.value,
        "payment_id": order.payment_id,
        "currency": order.currency,
        "total": order.total,
        "payment_token": order.payment_token,
        "delivery_address": order.delivery_address,
        "email": order.email,
        "phone": order.phone,
        "cancel_reason": order.cancel_reason,
        "cancel_requested": order.cancel_requested,
        "created_at": order.created_at,
        "updated_at": order.updated_at or order.created_at,
        "version": order.version,
    }


def add(uow: UnitOfWork, order: Order) -> None:
    """Send the events of a new order's making (now, in the current context) and store it at
    commit, with every other order added in the transaction (one statement per table). The
    order is inserted as it is at commit: changed again in the transaction (`save`), it is
    inserted in its last state, with all its history, and not updated (the transaction's
    updates of other orders may be made before its insert: `UnitOfWork.stage`)."""
    _send_events(uow, order)
    uow.stage(_insert_orders, order, key=order.id)
    uow.remember(_KIND, order.id, order)


async def _insert_orders(conn: AsyncConnection, added: list[Order]) -> None:
    await insert_rows(conn, orders, [_order_values(order) for order in added])
    await insert_rows(
        conn,
        order_lines,
        [
            {
                "order_id": order.id,
                "line_no": i,
                "menu_item_id": ln.menu_item_id,
                "name": ln.name,
                "size": ln.size,
                "quantity": ln.quantity,
                "unit_price": ln.unit_price,
            }
            for order in added
            for i, ln in enumerate(order.lines)
        ],
    )
    await _write_history(conn, added)


async def load(uow: UnitOfWork, order_id: UUID) -> Order | None:
    """An order to change, locked for this transaction (the same object if this transaction
    loaded it already)."""
    order: Order | None = uow.recall(_KIND, order_id)
    if order is None:
        order = await get(uow.conn, order_id, for_update=True)
        if order is not None:
            uow.remember(_KIND, order.id, order)
    return order


async def load_many(uow: UnitOfWork, order_ids: Iterable[UUID]) -> None:
    """Load (and lock) every order of a batch at once, to be moved on; `load` then finds them
    without a query. They come without their lines and past history (`Order.partial`): the
    saga's replies and the facts only change an order's status and payment, and append to its
    history, so one row each is read and not the whole order."""
    wanted = [i for i in set(order_ids) if uow.recall(_KIND, i) is None]
    if wanted:
        rows = await fetch_rows(uow.conn, _ORDERS_FOR_UPDATE, {"ids": wanted})
        if not rows:
            return
        last = {r.order_id: r.last for r in await fetch_rows(uow.conn, _HISTORY_LAST, {"ids": wanted})}
        for row in rows:
            order = _to_order(row, (), (), last_seq=last.get(row.id))
            order.partial = True
            uow.remember(_KIND, order.id, order)


def save(uow: UnitOfWork, order: Order) -> None:
    """Send the events of the order's changes now (caused by what is being handled) and write
    its new state at commit, in one statement with every other order changed in the transaction
    (the order is locked since it was loaded, so nobody else changed it). An order added in
    this transaction and not written yet is left to its insert, which writes its last state."""
    _send_events(uow, order)
    if not uow.is_staged(_insert_orders, order.id):
        uow.stage(_write_orders, order, key=order.id)


def _send_events(uow: UnitOfWork, order: Order) -> None:
    recorded, order.events = order.events, []
    for event in recorded:
        uow.emit(event)


async def _write_orders(conn: AsyncConnection, changed: list[Order]) -> None:
    """What an order's moves change (its customer, lines, total, address and contact never do)."""
    params = []
    for order in changed:
        order.version += 1
        params.append(
            {
                "order_id": order.id,
                "status": order.status.value,
                "payment_status": order.payment_status.value,
                "payment_id": order.payment_id,
                "cancel_reason": order.cancel_reason,
                "cancel_requested": order.cancel_requested,
                "updated_at": order.updated_at or order.created_at,
                "version": order.version,
            }
        )
    await update_rows(conn, _UPDATE_ORDER, params)
    await _write_history(conn, changed)


async def _write_history(conn: AsyncConnection, changed: list[Order]) -> None:
    rows = []
    for order in changed:
        rows += [
            {
                "order_id": order.id,
                "seq": i,
                "status": status.value,
                "at": at,
                "reason": order.cancel_reason if status is Status.CANCELLED else None,
            }
            for i, (status, at) in enumerate(order.history[order.stored_history :], start=order.next_history_seq)
        ]
        order.next_history_seq += len(order.history) - order.stored_history
        order.stored_history = len(order.history)
    if rows:
        await insert_rows(conn, order_history, rows)


def _to_order(row: Any, lines: Iterable[Any], history: Sequence[Any], last_seq: int | None = None) -> Order:
    """The order of its rows; `last_seq`: the last history entry's (default: of `history`). New
    entries follow the last one stored, whatever gaps there are."""
    steps = [(Status(h.status), h.at) for h in history]
    if history:
        last_seq = history[-1].seq
    return Order(
        id=row.id,
        customer_id=row.customer_id,
        lines=[Line(r.menu_item_id, r.name, r.size, r.quantity, r.unit_price) for r in lines],
        total=row.total,
        currency=row.currency,
        payment_token=row.payment_token,
        delivery_address=row.delivery_address,
        email=row.email,
        phone=row.phone,
        created_at=row.created_at,
        status=Status(row.status),
        payment_status=PaymentStatus(row.payment_status),
        payment_id=row.payment_id,
        cancel_reason=row.cancel_reason,
        updated_at=row.updated_at,
        history=steps,
        cancel_requested=row.cancel_requested,
        version=row.version,
        stored_history=len(steps),
        next_history_seq=0 if last_seq is None else last_seq + 1,
    )


async def _hydrate(conn: AsyncConnection, rows: Sequence[Any]) -> list[Order]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    lines: dict[UUID, list[Any]] = defaultdict(list)
    for ln in await fetch_rows(conn, _LINES, {"ids": ids}):
        lines[ln.order_id].append(ln)
    history: dict[UUID, list[Any]] = defaultdict(list)
    for h in await fetch_rows(conn, _HISTORY, {"ids": ids}):
        history[h.order_id].append(h)
    return [_to_order(r, lines[r.id], history[r.id]) for r in rows]


async def get(conn: AsyncConnection, order_id: UUID, *, for_update: bool = False) -> Order | None:
    rows = await fetch_rows(conn, _ORDER_FOR_UPDATE if for_update else _ORDER, {"order_id": order_id})
    found = await _hydrate(conn, rows[:1])
    return found[0] if found else None


async def get_many(conn: AsyncConnection, order_ids: Iterable[UUID]) -> dict[UUID, Order]:
    """The orders of these ids that exist, read (not locked)."""
    wanted = list(set(order_ids))
    if not wanted:
        return {}
    rows = await fetch_rows(conn, _ORDERS, {"ids": wanted})
    return {order.id: order for order in await _hydrate(conn, rows)}


# -- the menu copy ------------------------------------------------------------------------------


async def apply_menu_entry(conn: AsyncConnection, entry: MenuEntry, *, removed: bool = False) -> None:
    """Keep the newest version of an item; an older event arriving late changes nothing."""
    values = {
        "id": entry.id,
        "name": entry.name,
        "currency": entry.currency,
        "prices": dict(entry.prices),
        "available": entry.available and not removed,
        "removed": removed,
        "version": entry.version,
    }
    await conn.execute(upsert(conn, menu_copy, ["id"], only_if_newer="version"), values)


async def remove_menu_entry(conn: AsyncConnection, item_id: UUID, version: int) -> None:
    await conn.execute(
        menu_copy.update()
        .where(menu_copy.c.id == item_id, menu_copy.c.version < version)
        .values(removed=True, available=False, version=version)
    )


async def menu_entries(conn: AsyncConnection, ids: Iterable[UUID]) -> dict[UUID, MenuEntry]:
    return _menu_entries(await fetch_rows(conn, _MENU, {"ids": list(set(ids))}))


def _menu_entries(rows: Iterable[Any]) -> dict[UUID, MenuEntry]:
    return {
        r.id: MenuEntry(
            id=r.id,
            name=r.name,
            currency=r.currency,
            prices=r.prices,
            available=r.available and not r.removed,
            version=r.version,
        )
        for r in rows
        if r.id is not None  # (no entry matched the locks' row)
    }


# -- idempotency keys and the unpaid limit ----------------------------------------------------


async def find_keys(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]], *, count_unpaid: bool = False
) -> tuple[dict[tuple[str, str], tuple[str, UUID]], dict[str, int]]:
    """Of these (customer, idempotency key) pairs, those used before: the request hash each was
    used with, and the order it placed; and with `count_unpaid`, how many of each customer's
    orders wait for payment (placed, not paid or cancelled yet), in the same round trip."""
    wanted = set(keys)
    customers = sorted({customer for customer, _ in wanted})
    unpaid = dict.fromkeys(customers, 0) if count_unpaid else {}
    if not wanted:
        return {}, unpaid
    params = {"customers": customers, "keys": sorted({key for _, key in wanted})}
    known: dict[tuple[str, str], tuple[str, UUID]] = {}
    for r in await fetch_rows(conn, _KEYS_AND_UNPAID if count_unpaid else _KEYS, params):
        if r.key is None:
            unpaid[r.customer_id] = r.unpaid
        elif (r.customer_id, r.key) in wanted:
            known[(r.customer_id, r.key)] = (r.request_hash, r.order_id)
    return known, unpaid


def add_key(uow: UnitOfWork, customer_id: str, key: str, request_hash: str, order_id: UUID, at: datetime) -> None:
    """Keep the key an order was placed with, written at commit with the transaction's others."""
    row = {"customer_id": customer_id, "key": key, "request_hash": request_hash, "order_id": order_id, "created_at": at}
    uow.stage(_insert_keys, row, key=(customer_id, key))


async def _insert_keys(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    # In key order: two transactions inserting some of the same keys (a retry racing its first
    # try) wait for each other in one order, never in a cycle (PostgreSQL).
    await insert_rows(conn, idempotency_keys, sorted(rows, key=lambda r: (r["customer_id"], r["key"])))


async def lock_customers_and_read_menu(
    conn: AsyncConnection, customer_ids: Iterable[str], item_ids: Iterable[UUID]
) -> dict[UUID, MenuEntry]:
    """Take the customers' placement locks until the transaction ends, in one order (every
    transaction that takes several takes them in it, so none waits for another in a cycle), and
    on the way back `menu_entries` of `item_ids`: one round trip. The entries are read as they
    were when the statement began, before the locks were taken (the menu copy needs none); what
    the locks guard is read after this. PostgreSQL; SQLite has one writer at a time anyway."""
    if conn.dialect.name != "postgresql":
        return await menu_entries(conn, item_ids)
    params = {"names": [f"orders.placement:{c}" for c in sorted(set(customer_ids))], "ids": list(set(item_ids))}
    return _menu_entries(await fetch_rows(conn, _LOCKS_AND_MENU, params))
