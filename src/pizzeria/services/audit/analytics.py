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

import orjson
import sqlalchemy as sa
from prometheus_client import Counter as MetricCounter
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.contracts.orders import OrderPlaced, OrderStatusChanged
from pizzeria.contracts.payments import PaymentCompleted, PaymentFailed
from pizzeria.kit.clock import as_utc
from pizzeria.kit.db import Database
from pizzeria.kit.logging import get_logger
from pizzeria.kit.upsert import update_rows
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.services.audit.tables import analytics_orders, audit_log

log = get_logger(__name__)

Bucket = Literal["hour", "day"]

#: The facts the read model is made of, by their CloudEvents type.
_FACTS: dict[str, type[Message]] = {
    m.type_name(): m for m in (OrderPlaced, OrderStatusChanged, PaymentCompleted, PaymentFailed)
}
_FACT_NAMES = frozenset(t.rpartition(".")[0] for t in _FACTS)

facts_unread = MetricCounter(
    "pizzeria_analytics_facts_unread_total",
    "Facts the analytics could not read (a version it does not know, or data its schema refuses), "
    "by type without its version; the audit log keeps each as it came.",
    ["type"],
)


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


#: What one fact says about its order: the order's id, and the columns it sets.
Change = tuple[str, dict[str, Any]]


def read(envelope: Envelope) -> Change | None:
    """What a message tells the read model, if it is a fact of it; None for every other
    message, and for a fact it cannot read (counted and logged: the log keeps it as it came)."""
    model = _FACTS.get(envelope.type)
    if model is None:
        if envelope.type.rpartition(".")[0] in _FACT_NAMES:  # another version of a fact it reads
            _unread(envelope, f"unknown schema version: {envelope.type}")
        return None
    try:
        fact = model.model_validate_json(envelope.data)
    except ValidationError as exc:  # where and what, not the values (personal data, maybe)
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        _unread(envelope, "schema: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        return None
    except Exception as exc:  # e.g. data nested too deep to parse
        _unread(envelope, f"schema: {type(exc).__name__}")
        return None
    values = _values(fact)
    refusal = _refusal(values)
    if refusal is not None:
        _unread(envelope, refusal)
        return None
    return str(fact.order_id), values  # type: ignore[attr-defined]


def _unread(envelope: Envelope, error: str) -> None:
    facts_unread.labels(envelope.type.rpartition(".")[0]).inc()
    log.error("analytics cannot read a fact; the audit log keeps it", message_id=envelope.id, error=error[:500])


_INT64 = 2**63


def _refusal(values: dict[str, Any]) -> str | None:
    """Why the read model's columns could not hold what a fact says (`values`), though its
    schema takes it (None: they can). Such a fact must not reach a statement: its failure would
    roll back the audit log's entries with it."""
    for name, value in values.items():
        if isinstance(value, str):
            length = analytics_orders.c[name].type.length  # type: ignore[attr-defined]
            if length is not None and len(value) > length:
                return f"its {name} is longer than {length} characters"
        elif isinstance(value, datetime):
            try:
                as_utc(value)
            except OverflowError:
                return f"its {name} is out of range in UTC"
        elif isinstance(value, int) and not -_INT64 <= value < _INT64:
            return f"its {name} is out of the 64-bit range"
        elif name == "items" and not all(-_INT64 <= item["quantity"] < _INT64 for item in value):
            return "a quantity is out of the 64-bit range"
    return None


async def apply(conn: AsyncConnection, facts: Sequence[Change]) -> None:
    """A run of facts (what `read` made of them): what they say about each order is merged in
    memory, then every order's row is made or filled in by one statement, row after row in the
    order of their keys (facts of one order arrive from two topics in any order; two runs at
    once lock the rows they share in the same order, so neither waits for the other in a
    cycle). Every fact sets what it alone says (a placement's figures, a terminal status, a
    payment's outcome), so a fact applied twice changes nothing: the audit log's group reads
    these facts without an inbox."""
    changes: dict[str, dict[str, Any]] = {}
    for order_id, values in facts:
        changes.setdefault(order_id, {}).update(values)
    rows = [dict.fromkeys(_COLUMNS) | {"order_id": order_id} | changes[order_id] for order_id in sorted(changes)]
    await update_rows(conn, _merge(conn.dialect.name), rows)


#: Every column of the read model: each row of `apply` names them all (None: not said).
_COLUMNS = tuple(c.name for c in analytics_orders.c)


@functools.cache
def _merge(dialect: str) -> sa.Insert:
    """An order's row made, or what its facts say set in it: a column a run's facts do not
    mention (None in the row) keeps its value. Every column but two is never None when said;
    the items come with the placement and the reason with the cancellation, so those follow
    their fact's time."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(analytics_orders)
    new, old = stmt.excluded, analytics_orders.c
    keep: dict[str, Any] = {c: sa.func.coalesce(new[c], old[c]) for c in _COLUMNS if c != "order_id"}
    # (`.items` is a method of a column collection: the column by its name)
    keep["items"] = sa.case((new.placed_at.is_(None), old["items"]), else_=new["items"])
    keep["cancel_reason"] = sa.case((new.cancelled_at.is_(None), old.cancel_reason), else_=new.cancel_reason)
    return stmt.on_conflict_do_update(index_elements=[old.order_id], set_=keep)


async def rebuild(db: Database, *, chunk: int = 1000) -> int:
    """Apply every fact the audit log holds to the read model again, oldest first, a chunk of
    log entries a transaction, beside the running service (a fact applied twice changes
    nothing): for orders whose facts the read model missed, as those an older release's group of
    its own had not read when it stopped. Returns how many facts it applied."""
    after, applied = 0, 0
    while True:
        async with db.transaction() as conn:
            rows = (await conn.execute(_LOGGED_FACTS, {"after": after, "chunk": chunk})).all()
            if not rows:
                return applied
            facts = [fact for row in rows if (fact := read(_logged(row))) is not None]
            await apply(conn, facts)
        applied += len(facts)
        after = rows[-1].seq


def _logged(row: Any) -> Envelope:
    """A log entry as the message it records (what `read` looks at: its id, type and data)."""
    return Envelope(id=row.message_id, source="/pizzeria/audit", type=row.type, data=orjson.dumps(row.data))


_LOGGED_FACTS = (
    sa.select(audit_log.c.seq, audit_log.c.message_id, audit_log.c.type, audit_log.c.data)
    .where(audit_log.c.seq > sa.bindparam("after"), audit_log.c.type.in_(sorted(_FACTS)))
    .order_by(audit_log.c.seq)
    .limit(sa.bindparam("chunk"))
)


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
