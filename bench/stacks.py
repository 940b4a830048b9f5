"""The ways to run, as environments for `pizzeria up`: embedded; PostgreSQL + Kafka (one Apache
Kafka node in KRaft mode, started from its Maven artifacts like the tests' broker); and
PostgreSQL + sqllog, the embedded broker's log kept in a PostgreSQL database of its own.

Production mode insists on Kafka, so PostgreSQL + sqllog runs in embedded mode, with the same
PostgreSQL databases, Redis and signing secret as PostgreSQL + Kafka: only the broker and the
mode's refusals differ."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from tests.support.kafka import JVM_OPTIONS, LONG_RUNNING_JVM_OPTIONS, KafkaCluster, kafka_version
from tests.support.postgres import ADMIN_DSN, create_database, drop_database

from bench.stats import pids, process_cpu_s
from pizzeria.kit.db import Database
from pizzeria.kit.migrations import MigrationSet, upgrade
from pizzeria.kit.settings import get_settings
from pizzeria.messaging.broker import Broker, TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker
from pizzeria.registry import SERVICES

STACKS = ("embedded", "postgres+kafka", "postgres+sqllog")

#: The share of new traces each stack samples unless `TRACE_SAMPLE_RATIO` is set: the default of
#: the way it is deployed. Embedded runs are `make run`'s, which keeps every trace (the code's
#: default, 1.0); the production stack samples as the Helm chart does with a collector (its
#: `tracing.sampleRatio`, 0.1). docs/performance.md gives the cost of both on each stack.
TRACE_SAMPLING = {"embedded": "1.0", "postgres+kafka": "0.1", "postgres+sqllog": "1.0"}


def trace_sampling(stack: str) -> str:
    """The `TRACE_SAMPLE_RATIO` a run of `stack` uses (the environment's, if it sets one)."""
    return os.environ.get("TRACE_SAMPLE_RATIO") or TRACE_SAMPLING[stack]


@contextlib.asynccontextmanager
async def stack_env(name: str, workdir: Path, *, long_running: bool = False) -> AsyncIterator[dict[str, str]]:
    """The environment of a system of stack `name`, its parts started. With `long_running`, for
    a run that takes orders a while before it measures (the system bench's warm-up), the Kafka
    broker compiles as a deployed one does; otherwise as the tests' quick ones
    (tests/support/kafka.py): a short run would time the optimizing compiler at work."""
    if name == "embedded":
        yield {"TRACE_SAMPLE_RATIO": trace_sampling(name)}
        return
    jvm_options = LONG_RUNNING_JVM_OPTIONS if long_running else JVM_OPTIONS
    kafka = KafkaCluster(workdir / "kafka", jvm_options=jvm_options).start() if name == "postgres+kafka" else None
    urls: dict[str, str] = {}
    try:
        urls = {s.name: await create_database(f"pzbench_{s.name}") for s in SERVICES if s.has_database}
        env = {f"{n.upper()}_DATABASE_URL": u for n, u in urls.items()}
        env["JWT_SECRET"] = secrets.token_urlsafe(48)  # production mode refuses the public one
        env["TRACE_SAMPLE_RATIO"] = trace_sampling(name)
        env.update({"REDIS_URL": "redis://127.0.0.1:6379/13", "REDIS_KEY_PREFIX": f"pzbench-{secrets.token_hex(6)}"})
        if kafka is not None:
            # Each service logs in as its own user, allowed what its ACLs allow, as in production.
            env.update({"PIZZERIA_MODE": "production", **kafka.environment()})
        else:
            urls["sqllog"] = await create_database("pzbench_sqllog")
            env["BROKER_URL"] = f"sqllog+{urls['sqllog']}"
        yield env
    finally:
        for url in urls.values():
            await drop_database(url)
        if kafka is not None:
            kafka.stop()


BROKER_NOTE = {
    "embedded": "SQLite per service + sqllog broker (SQLite)",
    "postgres+kafka": f"PostgreSQL 15 per service + Apache Kafka {kafka_version()} (one KRaft node)",
    "postgres+sqllog": "PostgreSQL 15 per service + sqllog broker (its own PostgreSQL database; embedded mode)",
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
    stack's broker (the sqllog on SQLite or on a PostgreSQL database of its own, or one Apache
    Kafka node) started with `topics`."""
    kafka: KafkaCluster | None = None
    dropped: list[str] = []  # the PostgreSQL databases made here
    if stack == "embedded":
        url = f"sqlite:///{workdir}/service.db"
        broker: Broker = SqlLogBroker(f"sqlite:///{workdir}/broker.db")
        database = None
    else:
        url = await create_database(name)
        dropped.append(url)
        database = url.rsplit("/", 1)[1].split("?", 1)[0]
        if stack == "postgres+kafka":
            # The quick compiler (see `stack_env`): a benchmark of one part runs for seconds.
            kafka = KafkaCluster(workdir / "kafka").start()
            # the producer's linger as the services have it (KAFKA_LINGER_MS)
            broker = kafka.broker(linger_ms=get_settings().kafka_linger_ms)
        else:
            dropped.append(await create_database(f"{name}_sqllog"))
            broker = SqlLogBroker(dropped[-1])
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
        for created in dropped:
            await drop_database(created)


class PgWatch:
    """Per service database: transactions and rows (pg_stat_database), and the CPU of its backends."""

    FIELDS = (
        "xact_commit",
        "xact_rollback",
        "tup_returned",
        "tup_fetched",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
    )

    def __init__(self, env: dict[str, str]) -> None:
        self.dbs = {
            k.removesuffix("_DATABASE_URL").lower(): v.rsplit("/", 1)[1].split("?", 1)[0]
            for k, v in env.items()
            if k.endswith("_DATABASE_URL")
        }

    async def snapshot(self) -> dict[str, Any]:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            names = list(self.dbs.values())
            stats = {
                r["datname"]: {f: r[f] for f in self.FIELDS}
                for r in await conn.fetch(
                    f"SELECT datname, {', '.join(self.FIELDS)} FROM pg_stat_database WHERE datname = ANY($1)", names
                )
            }
            backends = await conn.fetch("SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY($1)", names)
        finally:
            await conn.close()
        cpu: dict[str, dict[int, float]] = {}
        for r in backends:
            with contextlib.suppress(OSError):  # a backend that just ended
                cpu.setdefault(r["datname"], {})[r["pid"]] = process_cpu_s(r["pid"])
        return {"stats": stats, "cpu": cpu}

    def delta(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for svc, db in self.dbs.items():
            s0, s1 = a["stats"].get(db, {}), b["stats"].get(db, {})
            c0, c1 = a["cpu"].get(db, {}), b["cpu"].get(db, {})
            out[svc] = {
                **{f: s1.get(f, 0) - s0.get(f, 0) for f in self.FIELDS},
                "backend_cpu_s": sum(v - c0.get(pid, 0.0) for pid, v in c1.items()),
            }
        return out


def _pids(wanted: Callable[[list[str]], bool]) -> list[int]:
    """The processes whose command line (its arguments) `wanted` accepts."""
    found = []
    for pid in pids():
        with contextlib.suppress(OSError):  # gone meanwhile
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if wanted([a.decode(errors="replace") for a in args if a]):
                found.append(pid)
    return found


class InfraWatch:
    """The CPU of what a stack runs beside the services, which the aims of the cost issue do not
    count and the machine's cores still pay: PostgreSQL's backends of the stack's databases (not
    its background processes: a floor), the Kafka node the bench started, the Redis it uses
    (shared with whatever else uses it meanwhile), and the load generator (this process)."""

    def __init__(self, stack: str, workdir: Path, env: dict[str, str]) -> None:
        self.pg = PgWatch(env) if stack != "embedded" else None
        self.procs: dict[str, list[int]] = {"load generator": [os.getpid()]}
        if stack == "postgres+kafka":
            self.procs["Kafka"] = _pids(lambda a: bool(a) and a[0].endswith("java") and str(workdir) in " ".join(a))
        if stack != "embedded":  # the Redis the stack's URL names (its title is "redis-server HOST:PORT")
            where = env["REDIS_URL"].split("://", 1)[1].split("/", 1)[0]
            self.procs["Redis"] = _pids(lambda a: bool(a) and a[0].split()[:2] == ["redis-server", where])

    async def snapshot(self) -> dict[str, Any]:
        return {
            "pg": await self.pg.snapshot() if self.pg else None,
            "procs": {name: sum(_cpu_or_zero(p) for p in pids) for name, pids in self.procs.items()},
        }

    def used_s(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        """Seconds of CPU by part between two snapshots."""
        used: dict[str, float] = {}
        if self.pg is not None:
            used["PostgreSQL"] = sum(d["backend_cpu_s"] for d in self.pg.delta(before["pg"], after["pg"]).values())
        for name in self.procs:
            used[name] = after["procs"][name] - before["procs"][name]
        return used

    def per_order(self, before: dict[str, Any], after: dict[str, Any], orders: int) -> dict[str, float]:
        """ms of CPU an order, by part, between two snapshots."""
        return {name: round(seconds / orders * 1000, 2) for name, seconds in self.used_s(before, after).items()}


def _cpu_or_zero(pid: int) -> float:
    try:
        return process_cpu_s(pid)
    except OSError:  # gone
        return 0.0
