"""The inbox: a consumer records each message id it processed, in the same transaction as the
message's effects. A redelivered message finds its id taken and has no second effect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.upsert import insert_returning
from pizzeria.messaging.tables import inbox


async def claim(conn: AsyncConnection, group: str, message_id: str) -> bool:
    """Record `message_id` as processed by `group`; False if it already was (a duplicate).

    On PostgreSQL a concurrent claim of the same id waits for the first transaction, then sees
    the conflict, so two deliveries racing each other still have one effect.
    """
    row = {"group_id": group, "message_id": message_id, "processed_at": utcnow()}
    return bool(await insert_returning(conn, inbox, [row], _NEW, ignore=True))


async def claim_many(conn: AsyncConnection, group: str, message_ids: Sequence[str]) -> set[str]:
    """Record a run of message ids in one statement; returns those that were new (the rest are
    duplicates, already handled)."""
    if not message_ids:
        return set()
    now = utcnow()
    rows = [{"group_id": group, "message_id": m, "processed_at": now} for m in set(message_ids)]
    return {row[0] for row in await insert_returning(conn, inbox, rows, _NEW, ignore=True)}


_NEW = ("message_id",)


async def prune(conn: AsyncConnection, older_than: datetime) -> int:
    """Forget ids processed before `older_than` (redeliveries that old are not expected)."""
    result = await conn.execute(inbox.delete().where(inbox.c.processed_at < older_than))
    return result.rowcount or 0
