"""Business analytics from a read model fed by events: orders per minute, revenue, payment
success rate, delivery time (average and p95) and top menu items, per hour or day.

Every figure is about the orders *placed* in the period asked for, whatever happened to them
later: revenue is the total of those delivered; delivery time runs from placement to delivery.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.contracts.orders import OrderPlaced, OrderStatusChanged
from pizzeria.contracts.payments import PaymentCompleted, PaymentFailed
from pizzeria.kit.upsert import insert_rows, update_rows
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.audit.tables import analytics_orders

Bucket = Literal["hour", "day"]


def _values(event: Any) -> dict[str, Any]:
    """What one fact says about its order, as columns of the read model."""
    if isinstance(event, OrderPlaced):
        return {
            "placed_at": event.placed_at,
            "total": event.total,
            "currency": event.currency,
            "items": [{"name": i.name, "quantity": i.quantity} for i in event.items],
        }
    if isinstance(event, OrderStatusChanged):
        if event.status == "delivered":
            return {"status": "delivered", "delivered_at": event.at}
        if event.status == "cancelled":
            return {"status": "cancelled", "cancelled_at": event.at, "cancel_reason": event.reason}
        return {}
    return {"payment_outcome": "completed" if isinstance(event, PaymentCompleted) else "failed"}


@functools.cache
def _update(columns: tuple[str, ...]) -> sa.Update:
    return (
        analytics_orders.update()
        .where(analytics_orders.c.order_id == sa.bindparam("oid"))
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )


def build_handlers() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.on_batch(OrderPlaced, OrderStatusChanged, PaymentCompleted, PaymentFailed)
    async def record(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of facts: what they say about each order is merged in memory, then every order
        row is made (facts of one order arrive from two topics in any order) and filled in, one
        statement per set of columns."""
        changes: dict[str, dict[str, Any]] = {}
        for item in items:
            changes.setdefault(str(item.message.order_id), {}).update(_values(item.message))
        await insert_rows(uow.conn, analytics_orders, [{"order_id": o} for o in changes], ignore=True)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for order_id, values in changes.items():
            if values:
                by_columns.setdefault(tuple(sorted(values)), []).append(
                    {"oid": order_id, **{f"v_{c}": v for c, v in values.items()}}
                )
        for columns, params in by_columns.items():
            await update_rows(uow.conn, _update(columns), params)

    return registry


def nearest_rank(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def figures(rows: list[Any], minutes: float) -> dict[str, Any]:
    """The figures of a set of orders placed over `minutes`."""
    delivered = [r for r in rows if r.status == "delivered" and r.delivered_at is not None]
    times = [(r.delivered_at - r.placed_at).total_seconds() for r in delivered]
    payments = Counter(r.payment_outcome for r in rows if r.payment_outcome)
    settled = payments["completed"] + payments["failed"]
    return {
        "orders": len(rows),
        "orders_per_minute": round(len(rows) / minutes, 4) if minutes > 0 else None,
        "delivered": len(delivered),
        "cancelled": sum(1 for r in rows if r.status == "cancelled"),
        "revenue": sum(r.total or 0 for r in delivered),
        "payment_success_rate": round(payments["completed"] / settled, 4) if settled else None,
        "delivery_time_avg_s": round(sum(times) / len(times), 3) if times else None,
        "delivery_time_p95_s": round(p95, 3) if (p95 := nearest_rank(times, 95)) is not None else None,
    }


def top_items(rows: list[Any], limit: int = 10) -> list[dict[str, Any]]:
    """Menu items by quantity in delivered orders."""
    sold: Counter[str] = Counter()
    for r in rows:
        if r.status == "delivered":
            for item in r.items or []:
                sold[item["name"]] += int(item["quantity"])
    return [{"name": name, "quantity": quantity} for name, quantity in sold.most_common(limit)]


def _floor(at: datetime, bucket: Bucket) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if bucket == "day" else at


async def report(conn: AsyncConnection, *, since: datetime, until: datetime, bucket: Bucket) -> dict[str, Any]:
    rows = list(
        (
            await conn.execute(
                sa.select(analytics_orders)
                .where(analytics_orders.c.placed_at >= since, analytics_orders.c.placed_at < until)
                .order_by(analytics_orders.c.placed_at)
            )
        ).all()
    )
    step = timedelta(days=1) if bucket == "day" else timedelta(hours=1)
    buckets: dict[datetime, list[Any]] = {}
    for row in rows:
        buckets.setdefault(_floor(row.placed_at, bucket), []).append(row)
    return {
        "since": since,
        "until": until,
        "bucket": bucket,
        "summary": figures(rows, (until - since).total_seconds() / 60),
        "top_items": top_items(rows),
        "buckets": [
            {"start": start, **figures(group, step.total_seconds() / 60)} for start, group in sorted(buckets.items())
        ],
    }
