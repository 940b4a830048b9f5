"""The audit consumer: every message of every topic, recorded once, as it was sent, and the
analytics read model kept from the same run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from pizzeria.kit import context
from pizzeria.kit.clock import utcnow
from pizzeria.kit.upsert import insert_rows
from pizzeria.messaging.consumer import HandlerRegistry, Incoming, PermanentError
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import REGISTRY
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.audit import analytics
from pizzeria.services.audit.tables import audit_log


def _text(value: Any) -> str | None:
    return str(value)[:64] if value not in (None, "") else None


def entry(envelope: Envelope, data: dict[str, Any], recorded_at: datetime | None = None) -> dict[str, Any]:
    """The audit row of a message: what it is, whom it concerns, who did it, what caused it
    (recorded `recorded_at`, by default now)."""
    declared = REGISTRY.get(envelope.type)
    return {
        "message_id": envelope.id,
        "topic": declared.topic() if declared is not None else "unknown",
        "type": envelope.type,
        "source": envelope.source,
        "subject": envelope.subject,
        "order_id": _text(data.get("order_id")),
        "user_id": _text(data.get("customer_id") or data.get("user_id")),
        "actor": _text(data.get("actor")),
        "correlation_id": envelope.correlationid,
        "causation_id": envelope.causationid,
        "trace_id": context.trace_id_of(envelope.traceparent),
        "occurred_at": envelope.time,
        "recorded_at": recorded_at or utcnow(),
        "data": data,
    }


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _data(envelope: Envelope) -> dict[str, Any]:
    try:
        loaded = orjson.loads(envelope.data)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(f"the data of {envelope.id} is not JSON: {exc}") from None
    # PostgreSQL's JSON keeps no NUL in text: such a message could never be written, and each
    # try would hold its partition up. It goes to the dead letters, bytes and all, at once.
    if b"\\u0000" in envelope.data and _holds_nul(loaded):
        raise PermanentError(f"the data of {envelope.id} holds NUL (\\u0000) in its text, which the log cannot keep")
    return loaded if isinstance(loaded, dict) else {"value": loaded}


def build_handlers() -> HandlerRegistry:
    # No inbox: the log's unique message id already makes a redelivered message a no-op, and
    # a fact applied to the analytics twice changes nothing (`analytics.apply`).
    registry = HandlerRegistry(inbox=False)

    @registry.on_any_batch
    async def record(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of messages in one statement, kept as they were sent (never decoded into
        their schemas: the log keeps what came, even what a newer schema would refuse); the
        facts the analytics read model is made of go to it in the same transaction, so every
        message is read once for both."""
        now = utcnow()  # one run, one time it was recorded
        await insert_rows(
            uow.conn, audit_log, [entry(item.envelope, _data(item.envelope), now) for item in items], ignore=True
        )
        facts = [fact for item in items if (fact := analytics.read(item.envelope)) is not None]
        await analytics.apply(uow.conn, facts)

    return registry


def query(
    *,
    order_id: str | None,
    user_id: str | None,
    type_: str | None,
    since: Any,
    until: Any,
    after: int | None,
    limit: int,
    correlation_id: str | None = None,
    newest_first: bool = False,
) -> sa.Select[Any]:
    """Entries matching every filter given, in the order things happened (or the reverse)."""
    stmt = sa.select(audit_log)
    if order_id:
        stmt = stmt.where(audit_log.c.order_id == order_id)
    if correlation_id:
        stmt = stmt.where(audit_log.c.correlation_id == correlation_id)
    if user_id:
        stmt = stmt.where(sa.or_(audit_log.c.user_id == user_id, audit_log.c.actor == user_id))
    if type_:
        stmt = stmt.where(audit_log.c.type == type_)
    if since is not None:
        stmt = stmt.where(audit_log.c.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(audit_log.c.occurred_at < until)
    if after is not None:
        stmt = stmt.where(audit_log.c.seq > after)
    return stmt.order_by(audit_log.c.seq.desc() if newest_first else audit_log.c.seq).limit(limit)
