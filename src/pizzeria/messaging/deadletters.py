"""Dead letters: messages a consumer group gave up on, kept in the service's own database (to
list, replay or discard them) and published to the group's dead-letter topic through the
outbox (for anything else that watches dead letters)."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database, one_of
from pizzeria.kit.ids import new_id
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_ignore
from pizzeria.messaging.broker import OutgoingMessage, Record
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.tables import dead_letters
from pizzeria.messaging.topics import dlq_topic
from pizzeria.messaging.uow import UnitOfWork


def storable(value: object, limit: int) -> str | None:
    """`value` as text any store and broker takes: UTF-8 (what is not, escaped), no NUL, at
    most `limit` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:limit]


#: The first key of the advisory locks that let one replica at a time replay a dead letter.
_REPLAY_LOCK = 0x646C7172


class DeadLetterStatus(enum.StrEnum):
    """Where a dead letter stands. Only a `dead` one can be replayed or discarded."""

    DEAD = "dead"
    REPLAY_REQUESTED = "replay_requested"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


_REPLAY_REQUESTS = (
    sa.select(dead_letters)
    .where(
        one_of(dead_letters.c.group_id, "groups"),
        dead_letters.c.status == DeadLetterStatus.REPLAY_REQUESTED,
    )
    .order_by(dead_letters.c.created_at)
    .limit(100)
)


class DeadLetterStore:
    """The `dead_letters` table of one service database."""

    def __init__(self, db: Database, uow_factory: Callable[[], UnitOfWork]) -> None:
        self.db = db
        self.uow_factory = uow_factory

    async def add(
        self,
        group: str,
        record: Record,
        envelope: Envelope | None,
        error: str,
        attempts: int,
        *,
        topic: str | None = None,
    ) -> None:
        """Record the dead letter and queue it for the dead-letter topic, in one transaction.
        A redelivered record that is already dead-lettered is not added twice."""
        now = utcnow()
        dl_id = new_id()
        # Whatever the record holds, the dead letter must be storable (PostgreSQL text takes no
        # NUL, the columns have lengths): a dead letter that cannot be written stops the group.
        key = storable(record.key, 255)
        headers = {storable(k, 255) or "": storable(v, 4000) or "" for k, v in record.headers.items()}
        error = storable(error, 4000) or "unknown"
        async with self.uow_factory() as uow:
            result = await uow.conn.execute(
                insert_ignore(uow.conn, dead_letters),
                {
                    "id": dl_id,
                    "group_id": group,
                    "message_id": storable(envelope.id if envelope else record.headers.get("ce_id"), 64),
                    "message_type": storable(envelope.type if envelope else record.headers.get("ce_type"), 255),
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": key,
                    "headers": orjson.dumps(headers).decode(),
                    "payload": record.value,
                    "error": error,
                    "attempts": attempts,
                    "status": DeadLetterStatus.DEAD,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if result.rowcount == 1:
                outgoing = {
                    **headers,
                    "dlq_id": dl_id,
                    "dlq_group": group,
                    "dlq_error": error[:1000],
                    "dlq_attempts": str(attempts),
                    "dlq_original_topic": record.topic,
                    "dlq_original_partition": str(record.partition),
                    "dlq_original_offset": str(record.offset),
                    "dlq_failed_at": now.isoformat(),
                }
                uow.emit_raw(
                    OutgoingMessage(topic=topic or dlq_topic(group), key=key, value=record.value, headers=outgoing),
                    message_id=new_id(),
                )
            await uow.commit()

    async def _set(self, dl_id: str, **values: Any) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                dead_letters.update().where(dead_letters.c.id == dl_id).values(updated_at=utcnow(), **values)
            )

    async def mark_replayed(self, dl_id: str) -> None:
        await self._set(dl_id, status=DeadLetterStatus.REPLAYED)

    async def mark_failed_again(self, dl_id: str, error: str, attempts: int) -> None:
        await self._set(
            dl_id,
            status=DeadLetterStatus.DEAD,
            error=storable(error, 4000),
            attempts=dead_letters.c.attempts + attempts,
        )

    async def leave_dead(self, conn: AsyncConnection, dl_id: str, status: DeadLetterStatus) -> bool:
        """Move a `dead` dead letter to `status` inside the caller's transaction; False if it
        is not dead (any more)."""
        result = await conn.execute(
            dead_letters.update()
            .where(dead_letters.c.id == dl_id, dead_letters.c.status == DeadLetterStatus.DEAD)
            .values(status=status, updated_at=utcnow())
        )
        return bool(result.rowcount)

    async def recent(self, *, status: DeadLetterStatus | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(dead_letters.c.status == status)
        async with self.db.read() as conn:
            return [_plain(r) for r in (await conn.execute(query)).all()]

    async def get(self, dl_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(dead_letters).where(dead_letters.c.id == dl_id))).first()
        return _plain(row) if row else None

    @staticmethod
    async def replay_requests(conn: AsyncConnection, groups: Sequence[str]) -> list[dict[str, Any]]:
        """The dead letters of `groups` waiting for their replay, oldest first (at most 100)."""
        if not groups:
            return []
        rows = await fetch_rows(conn, _REPLAY_REQUESTS, {"groups": list(groups)})
        return [_plain(r) for r in rows]

    @contextlib.asynccontextmanager
    async def replaying(self, dl_id: str) -> AsyncIterator[bool]:
        """Hold the replay of a dead letter while the caller replays it: True if it still waits
        for its replay and no other replica is replaying it. On PostgreSQL an advisory lock on
        its id, held by a transaction of its own until the caller is done; a replica that dies
        lets go of it with its connection, and the dead letter, still waiting, is replayed again
        (the consumer's inbox absorbs a repeat). Elsewhere one process has the database."""
        if not self.db.is_postgres:
            async with self.db.read() as conn:
                waiting = await _awaits_replay(conn, dl_id)
            yield waiting
            return
        async with self.db.transaction() as conn:
            held = sa.select(sa.func.pg_try_advisory_xact_lock(_REPLAY_LOCK, sa.func.hashtext(dl_id)))
            if not (await conn.execute(held)).scalar_one():
                yield False
                return
            # Asked under the lock: a replica that replayed it marked it so before letting go.
            yield await _awaits_replay(conn, dl_id)


async def _awaits_replay(conn: AsyncConnection, dl_id: str) -> bool:
    found = await conn.execute(sa.select(dead_letters.c.status).where(dead_letters.c.id == dl_id))
    return bool(found.scalar() == DeadLetterStatus.REPLAY_REQUESTED)


def as_record(row: dict[str, Any]) -> Record:
    """The original record of a stored dead letter, to run it through its consumer again."""
    return Record(
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        value=row["payload"],
        key=row["key"],
        headers=orjson.loads(row["headers"]),
        timestamp_ms=0,
    )


def _plain(row: Any) -> dict[str, Any]:
    # Reserved column names ("offset", "partition") come back as quoted_name, a str subclass.
    return {str(k): v for k, v in row._mapping.items()}
