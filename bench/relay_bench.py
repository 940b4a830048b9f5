"""Outbox relay benchmark: how fast a backlog drains to the broker, and the latency from a
transaction's commit to the broker's acknowledgement of its event under a steady load.

Latency is taken at the producer's acknowledgement (the delivery report), as the relay sees
it, not at a consumer, so broker fetch waits do not count."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.stacks import BROKER_NOTE, database_and_broker
from bench.stats import summary
from pizzeria.kit.db import Database
from pizzeria.kit.settings import get_settings
from pizzeria.messaging.broker import Broker, BrokerConsumer, OutgoingMessage, TopicSpec
from pizzeria.messaging.message import Message
from pizzeria.messaging.relay import OutboxRelay
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS, outbox
from pizzeria.messaging.uow import UnitOfWork


class BenchEvent(Message, context="bench", key="account"):
    """A typical small event."""

    account: str
    n: int
    note: str = "x" * 120


class AckClock(Broker):
    """Wraps a broker and notes when each message was acknowledged."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.acked: dict[str, float] = {}

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        await self.inner.create_topics(topics)

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        return self.inner.consumer(group, topics, client_id=client_id)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.inner.publish(messages)
        now = time.perf_counter()
        for m in messages:
            self.acked[m.headers["ce_id"]] = now


@contextlib.asynccontextmanager
async def environment(stack: str, workdir: Path) -> AsyncIterator[tuple[Database, Broker]]:
    topics = [TopicSpec("bench.events", partitions=3)]
    async with database_and_broker(
        stack, workdir, name="pzbench_relay", migrations=[MESSAGING_MIGRATIONS], topics=topics
    ) as parts:
        yield parts.db, parts.broker


async def _backlog(db: Database) -> int:
    async with db.read() as conn:
        return int(
            (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
                )
            ).scalar_one()
        )


async def run(stack: str, *, events: int, rates: Sequence[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pzrelay-") as tmp:
        async with environment(stack, Path(tmp)) as (db, inner):
            broker = AckClock(inner)
            # 1. Drain: a backlog written while the relay was down, published as fast as it goes.
            for start in range(0, events, 500):
                async with UnitOfWork(db, source="/bench") as uow:
                    for n in range(start, min(events, start + 500)):
                        uow.emit(BenchEvent(account=f"k{n % 100}", n=n))
                    await uow.commit()
            # As the services run it (OUTBOX_LINGER_MS: woken by a commit, it waits for those behind).
            relay = OutboxRelay(
                db, broker, batch_size=500, poll_interval=1.0, linger=get_settings().outbox_linger_ms / 1000
            )
            began = time.perf_counter()
            task = asyncio.create_task(relay.run())
            while await _backlog(db):
                await asyncio.sleep(0.01)
            drain_per_s = events / (time.perf_counter() - began)

            # 2. Latency under steady offered loads: commit → acknowledgement of each event.
            latency: dict[int, str] = {}
            for rate in rates:
                latency[rate] = await _steady(db, broker, relay, rate, total=min(events, rate * 5))
            relay.stop()
            await task
    return {
        "stack": stack,
        "broker": BROKER_NOTE[stack],
        "events": events,
        "drain_per_s": drain_per_s,
        "latency": latency,
    }


async def _steady(db: Database, broker: AckClock, relay: OutboxRelay, rate: int, *, total: int) -> str:
    committed: dict[str, float] = {}
    writers = 4
    interval = writers / rate

    async def writer(w: int) -> None:
        next_at = time.perf_counter()
        for n in range(w, total, writers):
            uow = UnitOfWork(db, source="/bench", on_commit=relay.wake)
            async with uow:
                envelope = uow.emit(BenchEvent(account=f"k{n % 100}", n=n))
                await uow.commit()
            committed[envelope.id] = time.perf_counter()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    await asyncio.gather(*(writer(w) for w in range(writers)))
    while await _backlog(db):
        await asyncio.sleep(0.01)
    return summary([broker.acked[i] - t for i, t in committed.items()])
