"""The unit of work: one database transaction plus the messages it emits through the outbox.

State changes and outbox rows commit together or not at all; after the commit the relay is
woken so the messages reach the broker within milliseconds. Nothing commits half-way: leaving
the block without `commit()` rolls everything back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.messaging import inbox
from pizzeria.messaging.broker import OutgoingMessage
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.tables import outbox

_INSERT_OUTBOX = outbox.insert()
_NOTIFY = sa.text("NOTIFY pizzeria_outbox")

#: PostgreSQL channel a committing transaction notifies so relays in other processes wake up.
OUTBOX_CHANNEL = "pizzeria_outbox"


class Aggregate(Protocol):
    """Anything with an identity whose changes are recorded as events, sent when they commit."""

    @property
    def id(self) -> Any: ...

    events: list[Message]


A = TypeVar("A", bound=Aggregate)


class UnitOfWork:
    """`async with uow:` opens the transaction; `await uow.commit()` ends it."""

    def __init__(self, db: Database, *, source: str, on_commit: Callable[[], None] | None = None) -> None:
        self.db = db
        self.source = source
        self._on_commit = on_commit
        self._conn: AsyncConnection | None = None
        self._pending: list[dict[str, Any]] = []
        self.emitted: list[Envelope] = []
        self._after_commit: list[Callable[[], Awaitable[None] | None]] = []
        self._tracked: list[Aggregate] = []
        self.committed = False

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work is not open")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self.db.begin_write()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def claim(self, group: str, message_id: str) -> bool:
        """Inbox check inside this transaction: False means the message was already handled."""
        return await inbox.claim(self.conn, group, message_id)

    def track(self, aggregate: A) -> A:
        """Send the events `aggregate` records in this transaction, through the outbox, when it
        commits (the repository persists the aggregate; the unit of work emits its events)."""
        if not any(seen is aggregate for seen in self._tracked):
            self._tracked.append(aggregate)
        return aggregate

    def tracked(self, kind: type[A], aggregate_id: Any) -> A | None:
        """The aggregate of this kind and id already loaded in this transaction, if any (so two
        parts of one handler change the same object, not two copies)."""
        for seen in self._tracked:
            if isinstance(seen, kind) and seen.id == aggregate_id:
                return seen
        return None

    def emit(self, message: Message) -> Envelope:
        """Queue an event or command for the outbox of this transaction."""
        envelope = Envelope.wrap(message, source=self.source)
        self.emitted.append(envelope)
        self.emit_raw(envelope.to_outgoing(message.topic()), message_id=envelope.id)
        return envelope

    def emit_raw(self, message: OutgoingMessage, *, message_id: str) -> None:
        """Queue an already-built record (dead letters keep the original bytes and headers)."""
        self._pending.append({
            "id": message_id,
            "topic": message.topic,
            "key": message.key,
            "headers": orjson.dumps(dict(message.headers)).decode(),
            "payload": message.value,
            "created_at": utcnow(),
        })

    def after_commit(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Run `callback` once this transaction has committed (to wake a worker, or to
        invalidate a cache: an awaitable it returns is awaited)."""
        self._after_commit.append(callback)

    async def commit(self) -> None:
        conn = self.conn
        for aggregate in self._tracked:
            recorded, aggregate.events = aggregate.events, []
            for event in recorded:
                self.emit(event)
        self._tracked = []
        if self._pending:
            await conn.execute(_INSERT_OUTBOX, self._pending)
            if self.db.is_postgres:
                await conn.execute(_NOTIFY)
        await conn.commit()
        self.committed = True
        had_messages, self._pending = bool(self._pending), []
        if had_messages and self._on_commit is not None:
            self._on_commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            outcome = callback()
            if outcome is not None:
                await outcome
