"""The broker adapters under test, each with a way to disrupt its connection mid-stream."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pizzeria.messaging.broker import Broker, BrokerConsumer, Record
from pizzeria.messaging.kafka import KafkaBroker
from pizzeria.messaging.sqllog import SqlLogBroker


@dataclass
class BrokerHarness:
    """Builds fresh clients of one broker and can break their connections on purpose."""

    name: str
    make: Callable[[], Broker]
    disrupt: Callable[[], Awaitable[int]]
    prefix: str
    clients: list[Broker] = field(default_factory=list)

    async def client(self) -> Broker:
        broker = self.make()
        await broker.start()
        self.clients.append(broker)
        return broker

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def group(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    async def close(self) -> None:
        for broker in self.clients:
            await broker.close()


def sqllog_sqlite(path: str, prefix: str) -> BrokerHarness:
    def make() -> Broker:
        return SqlLogBroker(f"sqlite:///{path}", poll_interval_ms=10, session_timeout_ms=2000)

    async def disrupt() -> int:
        # No socket to cut on SQLite: take the whole file away from every client (an exclusive
        # lock) while their connections are thrown away, so that none reconnects before all are.
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            held.set()
            release.wait(30)
            conn.execute("COMMIT")
            conn.close()

        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(30)
        try:
            for broker in harness.clients:
                assert isinstance(broker, SqlLogBroker)
                await broker.database.writer.dispose()
                await broker.database.reader.dispose()
        finally:
            release.set()
            await asyncio.to_thread(thread.join)
        return len(harness.clients)

    harness = BrokerHarness("sqllog-sqlite", make, disrupt, prefix)
    return harness


def sqllog_postgres(url_via_proxy: str, drop: Callable[[], int], prefix: str) -> BrokerHarness:
    async def disrupt() -> int:
        return drop()

    return BrokerHarness(
        "sqllog-postgres",
        lambda: SqlLogBroker(url_via_proxy, poll_interval_ms=10, session_timeout_ms=2000),
        disrupt,
        prefix,
    )


def kafka(make: Callable[[], KafkaBroker], drop: Callable[[], int], prefix: str) -> BrokerHarness:
    async def disrupt() -> int:
        return drop()

    return BrokerHarness("kafka", make, disrupt, prefix)


async def drain(
    consumer: BrokerConsumer, want: int, *, timeout: float = 60.0, commit: bool = True, batch: int = 500
) -> list[Record]:
    """Fetch until `want` records arrived or the deadline passed (committing as it goes)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        records = await consumer.fetch(min(batch, want - len(got)), timeout=0.5)
        got.extend(records)
        if commit and records:
            await consumer.commit(next_offsets(records))
    return got


def next_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for r in records:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out
