"""The two ways to run, as environments for `pizzeria up`: embedded, and PostgreSQL + Kafka
(one Apache Kafka node in KRaft mode, started from its Maven artifacts like the tests' broker)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.kafka import KafkaCluster, kafka_version
from tests.support.postgres import create_database, drop_database

from pizzeria.kit.db import Database
from pizzeria.kit.migrations import MigrationSet, upgrade
from pizzeria.messaging.broker import Broker, TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker
from pizzeria.registry import SERVICES


@contextlib.asynccontextmanager
async def stack_env(name: str, workdir: Path) -> AsyncIterator[dict[str, str]]:
    if name == "embedded":
        yield {}
        return
    kafka = KafkaCluster(workdir / "kafka").start()
    urls: dict[str, str] = {}
    try:
        urls = {s.name: await create_database(f"pzbench_{s.name}") for s in SERVICES if s.has_database}
        env = {f"{n.upper()}_DATABASE_URL": u for n, u in urls.items()}
        # Each service logs in as its own user, allowed what its ACLs allow, as in production.
        env.update({"PIZZERIA_MODE": "production", **kafka.environment()})
        # Production mode refuses the public development signing secret.
        env["JWT_SECRET"] = secrets.token_urlsafe(48)
        env.update({"REDIS_URL": "redis://127.0.0.1:6379/13", "REDIS_KEY_PREFIX": f"pzbench-{secrets.token_hex(6)}"})
        yield env
    finally:
        for url in urls.values():
            await drop_database(url)
        kafka.stop()


BROKER_NOTE = {
    "embedded": "SQLite per service + sqllog broker (SQLite)",
    "postgres+kafka": f"PostgreSQL 15 per service + Apache Kafka {kafka_version()} (one KRaft node)",
}


@dataclass(frozen=True)
class Parts:
    """One service's database and a broker of a stack, for the benchmarks of single parts."""

    db: Database
    broker: Broker
    #: The PostgreSQL database's name (None on SQLite) and the Kafka node (None: the sqllog).
    database: str | None
    kafka: KafkaCluster | None


@contextlib.asynccontextmanager
async def database_and_broker(
    stack: str, workdir: Path, *, name: str, migrations: Sequence[MigrationSet], topics: Sequence[TopicSpec]
) -> AsyncIterator[Parts]:
    """A service database (SQLite, or PostgreSQL named `name`) brought to `migrations`, and the
    stack's broker (the sqllog, or one Apache Kafka node) started with `topics`."""
    kafka: KafkaCluster | None = None
    if stack == "embedded":
        url = f"sqlite+aiosqlite:///{workdir}/service.db"
        broker: Broker = SqlLogBroker(f"sqlite:///{workdir}/broker.db")
        database = None
    else:
        url = await create_database(name)
        database = url.rsplit("/", 1)[1].split("?", 1)[0]
        kafka = KafkaCluster(workdir / "kafka").start()
        broker = kafka.broker()
    await upgrade(url, migrations)
    db = Database(url, pool_size=10)
    await broker.start()
    await broker.create_topics(topics)
    try:
        yield Parts(db, broker, database, kafka)
    finally:
        await broker.close()
        await db.dispose()
        if kafka is not None:
            kafka.stop()
            await drop_database(url)
