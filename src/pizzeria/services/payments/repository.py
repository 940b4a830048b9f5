"""Loading and saving payments."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import as_utc
from pizzeria.kit.db import one_of
from pizzeria.kit.statements import execute, fetch_rows
from pizzeria.kit.upsert import insert_returning, update_rows
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.payments.domain import OPEN, Payment, Status
from pizzeria.services.payments.tables import payments

_FIELDS = (
    "id",
    "order_id",
    "customer_id",
    "amount",
    "currency",
    "token",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "provider_charge_id",
    "failure_reason",
    "cancel_requested",
    "refund_requested",
    "provider_refund_id",
    "traceparent",
)


_PAYMENT = sa.select(payments).where(payments.c.id == sa.bindparam("payment_id"))
_PAYMENT_FOR_UPDATE = _PAYMENT.with_for_update()
# A set takes the payments nobody holds and leaves the others (PostgreSQL; SQLite has one
# writer at a time): a set that waited for a row could wait in a cycle with a consumer's run
# (which locks its payments in the order its messages came), and would hold up every outcome
# queued behind it.
_PAYMENTS_FOR_UPDATE = (
    sa.select(payments).where(one_of(payments.c.id, "ids")).order_by(payments.c.id).with_for_update(skip_locked=True)
)
_UPDATE = payments.update().where(payments.c.id == sa.bindparam("payment_id"))
# Work for the charger: open payments to charge or void, completed ones waiting for a refund.
_WORK = sa.or_(
    payments.c.status.in_([s.value for s in OPEN]),
    sa.and_(payments.c.status == Status.COMPLETED.value, payments.c.refund_requested.is_(True)),
)
# When the first piece of work can be claimed: its next attempt, or when its lease runs out if
# that is later (a holder that crashed). The work is few rows (open payments), found by index.
_NEXT_DUE = sa.select(
    sa.func.min(
        sa.case(
            (payments.c.locked_until > payments.c.next_attempt_at, payments.c.locked_until),
            else_=payments.c.next_attempt_at,
        )
    )
).where(_WORK)
_BY_ORDER_FOR_UPDATE = sa.select(payments).where(payments.c.order_id == sa.bindparam("order_id")).with_for_update()


def _to_payment(row: Any) -> Payment:
    values = {f: getattr(row, f) for f in _FIELDS}
    values["status"] = Status(values["status"])
    return Payment(**values)


def _values(p: Payment) -> dict[str, Any]:
    values = {f: getattr(p, f) for f in _FIELDS}
    values["status"] = p.status.value
    return values


async def add_if_new(conn: AsyncConnection, new: Sequence[Payment]) -> int:
    """Insert each payment unless its order already has one, in one statement; how many went in."""
    if not new:
        return 0
    return len(await insert_returning(conn, payments, [_values(p) for p in new], ["id"], ignore=True))


async def get(conn: AsyncConnection, payment_id: UUID, *, for_update: bool = False) -> Payment | None:
    rows = await fetch_rows(conn, _PAYMENT_FOR_UPDATE if for_update else _PAYMENT, {"payment_id": payment_id})
    return _to_payment(rows[0]) if rows else None


async def load_many(conn: AsyncConnection, payment_ids: Collection[UUID]) -> dict[UUID, Payment]:
    """The payments with these ids that exist and that no other transaction holds, locked
    until the transaction ends. One payment alone is waited for if another transaction holds
    it (waiting for one row cannot close a cycle)."""
    if len(payment_ids) == 1:  # spares rendering an IN list of one (a set of one is common)
        [payment_id] = payment_ids
        rows = await fetch_rows(conn, _PAYMENT_FOR_UPDATE, {"payment_id": payment_id})
    else:
        rows = await fetch_rows(conn, _PAYMENTS_FOR_UPDATE, {"ids": list(payment_ids)})
    return {row.id: _to_payment(row) for row in rows}


async def save(conn: AsyncConnection, payment: Payment, *, unlock: bool = True) -> None:
    await update_rows(conn, _UPDATE, [_saved(payment, unlock=unlock)])


def settle_at_commit(uow: UnitOfWork, payment: Payment) -> None:
    """Write the payment's state as it is at commit, and release its lease: in one statement
    with every other payment settled in the transaction."""
    uow.stage(_write_settled, payment, key=payment.id)


async def _write_settled(conn: AsyncConnection, settled: list[Payment]) -> None:
    await update_rows(conn, _UPDATE, [_saved(p, unlock=True) for p in settled])


def _saved(payment: Payment, *, unlock: bool) -> dict[str, Any]:
    values = _values(payment)
    values["payment_id"] = values.pop("id")
    if unlock:
        values["locked_until"] = None
    return values


async def of_order_for_update(conn: AsyncConnection, order_id: UUID) -> Payment | None:
    rows = await fetch_rows(conn, _BY_ORDER_FOR_UPDATE, {"order_id": order_id})
    return _to_payment(rows[0]) if rows else None


async def for_order(conn: AsyncConnection, order_id: UUID) -> list[Payment]:
    rows = (await conn.execute(sa.select(payments).where(payments.c.order_id == order_id))).all()
    return [_to_payment(r) for r in rows]


async def recent(conn: AsyncConnection, *, customer_id: str | None, limit: int) -> list[Payment]:
    """Newest payments first: one customer's, or everyone's."""
    query = sa.select(payments).order_by(payments.c.created_at.desc(), payments.c.id.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(payments.c.customer_id == customer_id)
    return [_to_payment(r) for r in (await conn.execute(query)).all()]


async def next_due(conn: AsyncConnection) -> datetime | None:
    """When the first piece of work can be claimed (in the past: now), None if there is no
    work at all: a read, before taking a write lock, that also says how long to sleep."""
    rows = await fetch_rows(conn, _NEXT_DUE)
    due = rows[0][0] if rows else None
    return None if due is None else as_utc(due)


def _claiming(*, fresh_first: bool, per_customer: bool) -> sa.Select[Any]:
    """The due payments a claim looks at, oldest first (those the provider has not failed yet
    first if `fresh_first`), at most `:limit`, and (`per_customer`) each customer's first
    `:per_customer` only; locked, skipping those another claim holds (PostgreSQL: SQLite has
    one writer at a time and renders no lock)."""
    due = sa.and_(
        _WORK,
        payments.c.next_attempt_at <= sa.bindparam("now"),
        sa.or_(payments.c.locked_until.is_(None), payments.c.locked_until < sa.bindparam("now")),
    )
    order = (*((payments.c.attempts,) if fresh_first else ()), payments.c.next_attempt_at, payments.c.id)
    query = sa.select(payments).where(due).order_by(*order).limit(sa.bindparam("limit"))
    if per_customer:
        # Each customer's first few due payments only (a window over the due ones, by customer).
        ranked = (
            sa.select(
                payments.c.id,
                sa.func.row_number().over(partition_by=payments.c.customer_id, order_by=order).label("place"),
            )
            .where(due)
            .subquery()
        )
        first_few = sa.select(ranked.c.id).where(ranked.c.place <= sa.bindparam("per_customer"))
        query = query.where(payments.c.id.in_(first_few))
    return query.with_for_update(skip_locked=True)


#: The claim's queries, by (fresh_first, per customer), built once.
_CLAIMING = {
    (fresh_first, per_customer): _claiming(fresh_first=fresh_first, per_customer=per_customer)
    for fresh_first in (False, True)
    for per_customer in (False, True)
}
_HOLD = (
    payments.update()
    .where(one_of(payments.c.id, "ids"))
    .values(
        locked_until=sa.bindparam("until"),
        status=sa.case((payments.c.status == Status.PENDING.value, Status.PROCESSING.value), else_=payments.c.status),
    )
)


class Claimed(list[Payment]):
    """The payments a claim took; `more`: one more could have been taken (more is due, so the
    next claim need not look first)."""

    more = False


async def claim_due(
    conn: AsyncConnection,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    exclude: set[UUID],
    fresh_first: bool = False,
    per_customer: int | None = None,
    busy: Mapping[str, int] | None = None,
) -> Claimed:
    """Take up to `limit` open payments whose next attempt is due and that nobody holds, and
    hold them for `lease` (a crashed holder's lease simply runs out); see `Claimed`.

    `fresh_first` prefers payments the provider has not failed yet: the probe of a half-open
    breaker should not be the one request that keeps timing out.

    `per_customer` is a bulkhead: no customer gets more than that many payments in hand, the
    `busy` ones (in flight already, by customer) included, so one customer's many payments (or
    many that never get an answer) cannot take every place while others wait."""
    busy = busy or {}
    params: dict[str, Any] = {"now": now}
    # Usually the due payments at the head of the line are of many customers: a page of them in
    # order (an index scan and a short sort) holds what the claim takes. Only a page that one
    # customer's many payments fill takes the window over every due payment, by customer.
    page = _PAGE * (limit + 1) + len(exclude) + sum(busy.values())
    rows, more, seen = _take(
        await fetch_rows(conn, _CLAIMING[fresh_first, False], {**params, "limit": page}),
        limit=limit,
        exclude=exclude,
        per_customer=per_customer,
        busy=busy,
    )
    if per_customer is not None and not more and seen == page:
        # One row more than it may take: whether more is due.
        params.update(limit=limit + 1 + len(exclude) + sum(busy.values()), per_customer=per_customer)
        rows, more, _ = _take(
            await fetch_rows(conn, _CLAIMING[fresh_first, True], params),
            limit=limit,
            exclude=exclude,
            per_customer=per_customer,
            busy=busy,
        )
    if rows:
        await execute(conn, _HOLD, {"ids": [r.id for r in rows], "until": now + lease})
    claimed = Claimed(_to_payment(r) for r in rows)
    claimed.more = more
    return claimed


#: A claim's first look reads this many due payments for each it may take.
_PAGE = 4


def _take(
    due: Sequence[Any], *, limit: int, exclude: set[UUID], per_customer: int | None, busy: Mapping[str, int]
) -> tuple[list[Any], bool, int]:
    """Of the due rows, in order, the first `limit` a claim may take (not in `exclude`, and no
    customer past `per_customer` with its `busy` ones); whether one more could have been taken;
    and how many rows there were."""
    held = dict(busy)
    rows: list[Any] = []
    for row in due:
        if row.id in exclude or (per_customer is not None and held.get(row.customer_id, 0) >= per_customer):
            continue
        if len(rows) == limit:
            return rows, True, len(due)
        held[row.customer_id] = held.get(row.customer_id, 0) + 1
        rows.append(row)
    return rows, False, len(due)
