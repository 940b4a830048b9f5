"""One saga participant under test: a service's SQLite database with its tables, its real
messaging runtime, and its consumer group fed one message at a time through the real consumer
runner (inbox, handler, commit). What the service answered is read back from its outbox."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.db import Database
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import Record
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, Outcome, RetryPolicy
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import REGISTRY, Message
from pizzeria.messaging.tables import metadata as messaging_metadata
from pizzeria.messaging.tables import outbox
from pizzeria.messaging.uow import UnitOfWork
from tests.fakes import InMemoryBroker
from tests.support.postgres import create_database, drop_database

#: A failing handler is dead-lettered at once: tests see the failure without waiting for retries.
ONE_ATTEMPT = RetryPolicy(max_attempts=1, initial_backoff=0.0, max_backoff=0.0)
SAGA_SOURCE = "/pizzeria/orders"


@functools.cache
def _settings() -> Settings:
    """Defaults (only the relay reads them here); built once, as reading them takes a while."""
    return Settings()


def decode(envelope: Envelope) -> Message:
    """The typed message an envelope carries."""
    return REGISTRY[envelope.type].model_validate_json(envelope.data)


class Participant:
    """A service's database, runtime and consumer group, driven by the test."""

    def __init__(self, db: Database, handlers: HandlerRegistry, *, service: str, group: str | None = None) -> None:
        """`group`: the consumer group's name, when it is not the service's."""
        self.db = db
        self.runtime = ServiceRuntime(service=service, settings=_settings(), db=db, broker=InMemoryBroker())
        self.runner = ConsumerRunner(
            group=group or service,
            handlers=handlers,
            broker=self.runtime.broker,
            uow_factory=self.runtime.uow,
            dead_letters=self.runtime.dead_letters,
            retry=ONE_ATTEMPT,
        )

    @classmethod
    async def create(
        cls, db: Database, metadata: sa.MetaData, handlers: HandlerRegistry, *, service: str
    ) -> Participant:
        """Add the service's own tables to `db` (which has the messaging tables already)."""
        async with db.transaction() as conn:
            await conn.run_sync(metadata.create_all)
        return cls(db, handlers, service=service)

    def uow(self) -> UnitOfWork:
        return self.runtime.uow()

    async def deliver(self, envelope: Envelope, topic: str) -> Outcome:
        """Hand one record to the consumer group, as the broker would."""
        record = Record(
            topic=topic,
            partition=0,
            offset=0,
            value=envelope.data,
            key=envelope.subject,
            headers=envelope.headers(),
            timestamp_ms=0,
        )
        return await self.runner.process(record)

    async def deliver_run(self, messages: list[Message]) -> None:
        """Hand new messages to the group in one fetch, as records of one partition in a row
        (the runner handles them in one transaction)."""
        records = [
            Record(
                topic=message.topic(),
                partition=0,
                offset=offset,
                value=envelope.data,
                key=envelope.subject,
                headers=envelope.headers(),
                timestamp_ms=0,
            )
            for offset, message in enumerate(messages)
            for envelope in [Envelope.wrap(message, source=SAGA_SOURCE)]
        ]
        await self.runner.process_batch(records)

    async def send(self, message: Message) -> list[Message]:
        """Deliver a new message (a fresh envelope, so a re-sent command is not an inbox
        duplicate); returns what the service emitted in answer to it."""
        envelope = Envelope.wrap(message, source=SAGA_SOURCE)
        outcome = await self.deliver(envelope, message.topic())
        assert outcome is Outcome.PROCESSED, f"{type(message).__name__} was {outcome.value}"
        return await self.caused_by(envelope.id)

    async def emitted(self) -> list[Message]:
        """Everything in the outbox, oldest first."""
        return [decode(e) for e in await self._outbox()]

    async def caused_by(self, message_id: str) -> list[Message]:
        return [decode(e) for e in await self._outbox() if e.causationid == message_id]

    async def _outbox(self) -> list[Envelope]:
        async with self.db.read() as conn:
            found = (await conn.execute(sa.select(outbox).order_by(outbox.c.seq))).all()
        return [Envelope.from_headers(orjson.loads(r.headers), r.payload) for r in found]

    async def rows(self, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            result = await conn.execute(sa.select(table).where(*where))
            return [dict(r._mapping) for r in result.all()]


class HeldCommit:
    """Holds a unit of work's commit until `release` is set: what its transaction decided stays
    undecided (and its rows locked) meanwhile; `reached` is set when it would have committed
    (`flushed`: once its staged writes are made, so others wait on the rows they wrote)."""

    def __init__(self, uow: UnitOfWork, *, flushed: bool = False) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        commit = uow.commit

        async def held() -> None:
            if flushed:
                await uow.flush()
            self.reached.set()
            await self.release.wait()
            await commit()

        uow.commit = held  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def on_postgres(metadata: sa.MetaData, handlers: HandlerRegistry, *, service: str) -> AsyncIterator[Participant]:
    """A participant on a PostgreSQL database of its own (for what only PostgreSQL has: row
    locks that several transactions of one service wait for), dropped afterwards."""
    url = await create_database(service)
    db = Database(url)
    try:
        async with db.transaction() as conn:
            await conn.run_sync(messaging_metadata.create_all)
        yield await Participant.create(db, metadata, handlers, service=service)
    finally:
        await db.dispose()
        await drop_database(url)
