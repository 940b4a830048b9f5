"""The unit of work: one database transaction plus the messages it emits through the outbox.

State changes and outbox rows commit together or not at all; after the commit the relay is
woken so the messages reach the broker within milliseconds. Nothing commits half-way: leaving
the block without `commit()` rolls everything back.

Aggregates loaded to change are kept in an identity map (a second load in the same transaction
gets the same object), and their writes are staged and made at commit, one statement per table
for however many were changed: a batch of messages costs a few statements, not a few per message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.statements import commit
from pizzeria.kit.upsert import insert_rows, inserts_together
from pizzeria.messaging import inbox
from pizzeria.messaging.broker import OutgoingMessage
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.tables import outbox

_NOTIFY = sa.text("NOTIFY pizzeria_outbox")

#: PostgreSQL channel a committing transaction notifies so relays in other processes wake up.
OUTBOX_CHANNEL = "pizzeria_outbox"


T = TypeVar("T")
#: Writes staged rows of one kind, all at once (an `executemany`), at commit.
Writer = Callable[[AsyncConnection, list[Any]], Awaitable[None]]


class UnitOfWork:
    """`async with uow:` opens the transaction; `await uow.commit()` ends it."""

    def __init__(
        self,
        db: Database,
        *,
        source: str,
        on_commit: Callable[[], None] | None = None,
        heard_here: Callable[[], bool] | None = None,
    ) -> None:
        self.db = db
        self.source = source
        self._on_commit = on_commit
        #: On PostgreSQL, whether the relay that publishes for the database runs in this process
        #: (`OutboxRelay.leading`): `on_commit` wakes it, so no NOTIFY is sent for other
        #: processes' relays, which do not publish (a round trip, and a lock every notifying
        #: commit takes in turn). None: always NOTIFY.
        self._heard_here = heard_here
        self._conn: AsyncConnection | None = None
        self._pending: list[dict[str, Any]] = []
        self.emitted: list[Envelope] = []
        self._after_commit: list[Callable[[], Awaitable[None] | None]] = []
        self._loaded: dict[tuple[str, Any], Any] = {}
        self._staged: dict[Writer, dict[Any, Any]] = {}
        self.committed = False

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work is not open")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self.db.begin_write()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
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

    def remember(self, kind: str, key: Any, aggregate: T) -> T:
        """Keep an aggregate loaded (locked) in this transaction, so every later load of it in
        the transaction gets this same object."""
        self._loaded[(kind, key)] = aggregate
        return aggregate

    def recall(self, kind: str, key: Any) -> Any:
        """The aggregate of this kind and key loaded in this transaction, or None."""
        return self._loaded.get((kind, key))

    def stage(self, writer: Writer, row: Any, *, key: Any = None) -> None:
        """Have `writer` write `row` at commit, with every other row staged for it. Rows with a
        key replace an earlier row with that key (the last state of an aggregate wins); rows
        without one are all written (appends).

        At flush each writer is called once, in the order writers were first staged in the
        transaction (staging to a writer again does not move it), whatever was staged to
        others in between. So a writer is not told apart as an insert or an update: where one
        writer's rows need another's (the update of a row an insert of this transaction makes,
        a child of a new row), the repository either stages them in that order or folds the
        later change into the row still staged (`is_staged`), as orders' `save` does for an
        order added in the same transaction."""
        rows = self._staged.setdefault(writer, {})
        rows[key if key is not None else ("append", len(rows))] = row

    def is_staged(self, writer: Writer, key: Any) -> bool:
        """Whether the row of this key waits to be written by `writer` (not flushed yet)."""
        return key in self._staged.get(writer, {})

    async def flush(self) -> None:
        """Make the staged writes now (commit does; call it before reading them back in SQL)."""
        staged, self._staged = self._staged, {}
        for writer, rows in staged.items():
            await writer(self.conn, list(rows.values()))

    def emit(self, message: Message) -> Envelope:
        """Queue an event or command for the outbox of this transaction."""
        envelope = Envelope.wrap(message, source=self.source)
        self.emitted.append(envelope)
        self.emit_raw(envelope.to_outgoing(message.topic()), message_id=envelope.id)
        return envelope

    def emit_raw(self, message: OutgoingMessage, *, message_id: str) -> None:
        """Queue an already-built record (dead letters keep the original bytes and headers)."""
        self._pending.append(
            {
                "id": message_id,
                "topic": message.topic,
                "key": message.key,
                "headers": orjson.dumps(
                    headers if type(headers := message.headers) is dict else dict(headers)
                ).decode(),
                "payload": message.value,
            }
        )

    def after_commit(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Run `callback` once this transaction has committed (to wake a worker, or to
        invalidate a cache: an awaitable it returns is awaited)."""
        self._after_commit.append(callback)

    async def commit(self) -> None:
        conn = self.conn
        async with inserts_together(conn):  # on PostgreSQL the inserts go as one statement
            await self.flush()
            if self._pending:
                # Written now, just before the commit: the relay's latency counts from here (one
                # time for the transaction's rows, made text once on SQLite).
                now = utcnow()
                for row in self._pending:
                    row["created_at"] = now
                await insert_rows(conn, outbox, self._pending)
        if self._pending and self.db.is_postgres and not (self._heard_here is not None and self._heard_here()):
            await conn.execute(_NOTIFY)
        await commit(conn)
        self.committed = True
        had_messages, self._pending = bool(self._pending), []
        if had_messages and self._on_commit is not None:
            self._on_commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            outcome = callback()
            if outcome is not None:
                await outcome


async def each_in_one_transaction(
    uow: UnitOfWork,
    items: Sequence[T],
    act: Callable[[T], Awaitable[bool]],
    *,
    skip: tuple[type[Exception], ...],
    first: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Act on every item inside one transaction of `uow` (opened and committed here), after
    `first` (e.g. taking the items' locks in a set order); an item whose act raises one of
    `skip` (a domain refusal, raised before anything is written) is left. How many items the
    act reported as done."""
    async with uow:
        if first is not None:
            await first()
        done = 0
        for item in items:
            with contextlib.suppress(*skip):
                done += await act(item)
        await uow.commit()
    return done
