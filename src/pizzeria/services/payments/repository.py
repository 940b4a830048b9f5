"""Loading and saving payments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.upsert import insert_ignore
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
_UPDATE = payments.update().where(payments.c.id == sa.bindparam("payment_id"))
# Work for the charger: open payments to charge or void, completed ones waiting for a refund.
_WORK = sa.or_(
    payments.c.status.in_([s.value for s in OPEN]),
    sa.and_(payments.c.status == Status.COMPLETED.value, payments.c.refund_requested.is_(True)),
)
_DUE = (
    sa.select(payments.c.id)
    .where(
        _WORK,
        payments.c.next_attempt_at <= sa.bindparam("now"),
        sa.or_(payments.c.locked_until.is_(None), payments.c.locked_until < sa.bindparam("now")),
    )
    .limit(1)
)
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
    result = await conn.execute(insert_ignore(conn, payments).returning(payments.c.id), [_values(p) for p in new])
    return len(result.all())


async def get(conn: AsyncConnection, payment_id: UUID, *, for_update: bool = False) -> Payment | None:
    row = (await conn.execute(_PAYMENT_FOR_UPDATE if for_update else _PAYMENT, {"payment_id": payment_id})).first()
    return _to_payment(row) if row else None


async def save(conn: AsyncConnection, payment: Payment, *, unlock: bool = True) -> None:
    values = _values(payment)
    values["payment_id"] = values.pop("id")
    if unlock:
        values["locked_until"] = None
    await conn.execute(_UPDATE, values)


async def of_order_for_update(conn: AsyncConnection, order_id: UUID) -> Payment | None:
    row = (await conn.execute(_BY_ORDER_FOR_UPDATE, {"order_id": order_id})).first()
    return _to_payment(row) if row else None


async def for_order(conn: AsyncConnection, order_id: UUID) -> list[Payment]:
    rows = (await conn.execute(sa.select(payments).where(payments.c.order_id == order_id))).all()
    return [_to_payment(r) for r in rows]


async def recent(conn: AsyncConnection, *, customer_id: str | None, limit: int) -> list[Payment]:
    """Newest payments first: one customer's, or everyone's."""
    query = sa.select(payments).order_by(payments.c.created_at.desc(), payments.c.id.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(payments.c.customer_id == customer_id)
    return [_to_payment(r) for r in (await conn.execute(query)).all()]


async def any_due(conn: AsyncConnection, *, now: datetime) -> bool:
    """Is any open payment due for an attempt (a read, before taking a write lock)?"""
    return (await conn.execute(_DUE, {"now": now})).first() is not None


async def claim_due(
    conn: AsyncConnection, *, now: datetime, lease: timedelta, limit: int, exclude: set[UUID], fresh_first: bool = False
) -> list[Payment]:
    """Take up to `limit` open payments whose next attempt is due and that nobody holds, and
    hold them for `lease` (a crashed holder's lease simply runs out).

    `fresh_first` prefers payments the provider has not failed yet: the probe of a half-open
    breaker should not be the one request that keeps timing out."""
    query = (
        sa.select(payments)
        .where(
            _WORK,
            payments.c.next_attempt_at <= now,
            sa.or_(payments.c.locked_until.is_(None), payments.c.locked_until < now),
        )
        .order_by(*((payments.c.attempts,) if fresh_first else ()), payments.c.next_attempt_at)
        .limit(limit + len(exclude))
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = [r for r in (await conn.execute(query)).all() if r.id not in exclude][:limit]
    if rows:
        await conn.execute(
            payments.update()
            .where(payments.c.id.in_([r.id for r in rows]))
            .values(
                locked_until=now + lease,
                status=sa.case(
                    (payments.c.status == Status.PENDING.value, Status.PROCESSING.value), else_=payments.c.status
                ),
            )
        )
    return [_to_payment(r) for r in rows]
