"""The chaos campaign: the whole system started as a user starts it, a steady order load through
the gateway, a nemesis fired, the fault healed, the system left to settle, and the history
checker's verdict; for each fault, the recovery time (fault healed → an order placed after it
delivered). `make chaos` runs every scenario on the embedded stack and prints a table:

    python -m tests.chaos.campaign [--scenario NAME]...
                                   [--stack embedded|postgres+kafka|postgres+sqllog]...
                                   [--seed N] [--rate ORDERS_PER_S] [--report docs/reliability.md]

The stacks: *embedded* (SQLite per service, the sqllog broker in a SQLite file), *postgres+kafka*
(PostgreSQL per service, one Apache Kafka node; production mode), and *postgres+sqllog*
(PostgreSQL per service, the sqllog broker in a PostgreSQL database of its own). Production mode
insists on Kafka, so postgres+sqllog runs in embedded mode, with the databases, Redis and
signing secret of postgres+kafka: only the broker and the mode's refusals differ.

The nemeses:

- **kill -9** of each service in turn, several times, at random (seeded) moments; `pizzeria up`
  restarts it, and the fault is healed the moment it was fired;
- **SIGSTOP / SIGCONT** of a service for longer than the consumer session timeout (its group's
  partitions go to no one, or to another member, and it wakes up to find it lost them);
- **the payment provider down, then slow, then back** (the fault lab's switches, through the
  gateway);
- **the payment provider's port cut** for 20 s: a TCP proxy in front of it (the only way
  payments reaches it) stops listening, so connections are refused, then listens again. No root
  needed: the system is started with `PAYMENT_PROVIDER_URL` pointing at the proxy;
- **the broker stopped 30 s** and started again on the same ports and log directory (PostgreSQL +
  Kafka); on the sqllog stacks, whose broker is a log in a database every service writes and
  reads in-process, with no process of its own to stop, the fault lab's *broker paused* switch on
  every service instead;
- **a saga deadline passing while its service is down**: payments stopped longer than a short
  `SAGA_PAYMENT_TIMEOUT_S`, so orders are cancelled and any charge made late is refunded;
- **a long transaction holding PostgreSQL's xmin horizon** 60 s, on the sqllog's database when the
  log is on PostgreSQL (its dead row versions, consumer lag and fetch statements' time), else on
  orders' database (its outbox), with what it does to the orders' latency measured;
- **the soak**: `CHAOS_SOAK_MINUTES` (30 by default) at a steady rate with the nemeses above fired
  at random, and the checker at the end (`--scenario soak`).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import functools
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from pizzeria.chaos.checker import (
    FAILED,
    PROVIDER_UNREACHABLE,
    Excuse,
    History,
    OrderRecord,
    Result,
    deadline_passed,
)
from pizzeria.chaos.load import Load
from pizzeria.chaos.readback import check_system
from pizzeria.kit.settings import Settings
from pizzeria.messaging.sqllog import leases_t, members_t, offsets_t, partitions_t, records_t, topics_t
from pizzeria.messaging.tables import outbox
from pizzeria.services.orders.settings import OrdersSettings
from tests.e2e.conftest import production_env, sqllog_postgres_env
from tests.e2e.scenario import AUTOPILOT, MANY_ORDERS, TERMINAL, holds_within, stock_up, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.kafka import KafkaCluster
from tests.support.pgserver import PrivateServer
from tests.support.postgres import ADMIN_DSN, drop_database
from tests.support.tcpproxy import TcpProxy

#: What every campaign system runs with: orders end on their own and fast; no customer or
#: address limit stands in the way of the load or of the checker's reading everything back.
CHAOS_ENV = {
    **AUTOPILOT,
    **MANY_ORDERS,
    "RATE_LIMIT_PER_USER": "100000",
    "RATE_LIMIT_PER_IP": "100000",
}
#: The services a kill -9 goes to (the payment provider is the outside world: its ledger is
#: in memory, and its loss would be the provider's, not ours).
KILLABLE = ("gateway", "identity", "catalog", "orders", "payments", "kitchen", "delivery", "notifications", "audit")
#: The longer consumer session timeout of the two stacks (`SQLLOG_SESSION_TIMEOUT_MS`,
#: `KAFKA_SESSION_TIMEOUT_MS`, by default): a pause longer than it costs a member its group.
SESSION_TIMEOUT_S = (
    max(Settings.model_fields[f].default for f in ("sqllog_session_timeout_ms", "kafka_session_timeout_ms")) / 1000
)
RECOVERY_TIMEOUT_S = 180.0
STACKS = frozenset({"embedded", "postgres+kafka", "postgres+sqllog"})
#: The stacks whose broker is the sqllog (its *broker paused* switch stands in for a stopped broker).
SQLLOG_STACKS = frozenset({"embedded", "postgres+sqllog"})
#: The longest deadline of the saga's steps that wait on another service before cooking (the
#: stock reservation's and the payment's, by default): how long before a fault an order may have
#: been placed and still have a step whose deadline the fault outlasts.
SAGA_STEP_DEADLINE_S = max(OrdersSettings.model_fields[f].default for f in ("reserve_timeout_s", "payment_timeout_s"))
#: The payment step's deadline in the scenario that lets it pass while payments is stopped.
SHORT_PAYMENT_TIMEOUT_S = 6.0


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Arena:
    """A running system under load: what a nemesis acts on, and where it notes its faults."""

    system: System
    shop: Shop  # reads, straight at each service
    history: History
    rng: random.Random
    provider_proxy: TcpProxy | None = None
    kafka: KafkaCluster | None = None  # the broker, on PostgreSQL + Kafka
    postgres: PrivateServer | None = None  # the scenario's own database server, if it has one
    recoveries: list[tuple[str, float]] = field(default_factory=list)  # (fault, seconds to recover)
    notes: list[str] = field(default_factory=list)  # what a nemesis measured, for the report

    async def flowing_since(self, since: float, timeout: float = RECOVERY_TIMEOUT_S) -> float:
        """Wait until an order placed at or after `since` (epoch seconds) is delivered; the
        seconds from `since` to its delivery."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [r.order_id for r in self.history.acknowledged if r.order_id and r.place.started >= since][:20]
            delivered: list[float] = []
            for order_id in after:
                try:
                    order = await self.shop.order(order_id)
                except Exception:
                    continue  # the orders service may be down
                if order["status"] == "delivered":
                    delivered.append(epoch(order["history"][-1]["at"]))
            if delivered:
                return max(0.0, min(delivered) - since)
            await asyncio.sleep(0.25)
        raise AssertionError(f"no order placed after the fault was delivered within {timeout}s")

    async def healed(self, fault: str, at: float) -> None:
        """`fault` was healed at `at`: wait for orders to flow again, and note how long it took."""
        self.recoveries.append((fault, await self.flowing_since(at)))

    async def pid(self, service: str) -> int:
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            try:
                return await self.system.pid(service)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    async def provider(self, **switches: Any) -> None:
        """Set the payment provider's fault switches through the gateway's fault lab."""
        response = await self.shop.http.put(
            f"{self.system.url('gateway')}/api/v1/ops/faults/payment-provider", json=switches
        )
        response.raise_for_status()

    async def charges_in_flight(self) -> bool:
        """Whether the payment provider is answering a charge now (through the gateway's fault lab)."""
        response = await self.shop.http.get(f"{self.system.url('gateway')}/api/v1/ops/faults/payment-provider")
        response.raise_for_status()
        return bool(response.json().get("charges_in_flight"))

    async def pause_broker(self, paused: bool) -> None:
        """Pause (or resume) the broker on every service through the gateway's fault lab."""
        response = await self.shop.http.put(
            f"{self.system.url('gateway')}/api/v1/ops/faults/broker", json={"paused": paused}
        )
        response.raise_for_status()


Nemesis = Callable[[Arena], Awaitable[None]]


def kill(services: Sequence[str], rounds: int = 1) -> Nemesis:
    """kill -9 each of `services` in turn (in a seeded random order each round), each at a
    random moment, waiting for orders to flow again before the next."""

    async def nemesis(arena: Arena) -> None:
        for _ in range(rounds):
            for service in arena.rng.sample(list(services), len(services)):
                await asyncio.sleep(arena.rng.uniform(0.2, 3.0))  # a random moment of the load
                old = await arena.pid(service)
                os.kill(old, signal.SIGKILL)
                fired = time.time()
                await arena.system.wait_until(
                    functools.partial(_restarted, arena, service, old), RECOVERY_TIMEOUT_S, f"{service} restarted"
                )
                await arena.healed(f"kill -9 {service}", fired)

    return nemesis


async def _restarted(arena: Arena, service: str, old: int) -> bool:
    try:
        return await arena.system.pid(service) != old
    except Exception:
        return False


def pause(
    service: str,
    seconds: float = SESSION_TIMEOUT_S + 4,
    *,
    deadline: float | None = None,
    charges_in_flight: bool = False,
) -> Nemesis:
    """SIGSTOP a service for `seconds`, then SIGCONT it. With `deadline` (a saga step's, shorter
    than the pause), the orders it overlapped may end cancelled for the timeout. With
    `charges_in_flight`, the payment provider answers in a second for the two seconds before the
    stop, so that charges are under way when it comes: the provider makes them while payments is
    stopped, and payments learns of them only after the orders were cancelled (late charges)."""

    async def nemesis(arena: Arena) -> None:
        pid = await arena.pid(service)
        if charges_in_flight:
            await arena.provider(latency_ms=1000)
            # the fault's first phase: slow charges, until one is under way; then the stop
            await arena.system.wait_until(arena.charges_in_flight, 30, "a charge under way at the slow provider")
        os.kill(pid, signal.SIGSTOP)
        start = time.time()
        if charges_in_flight:
            await arena.provider(latency_ms=20)  # those under way keep their second
        try:
            await asyncio.sleep(seconds)  # the fault's length, not a wait for anything
        finally:
            os.kill(pid, signal.SIGCONT)
        end = time.time()
        fault = f"SIGSTOP {service}"
        if deadline is None:
            await arena.healed(fault, end)
            return
        fault = f"{fault} past its {deadline:g} s deadline"
        excuse = deadline_passed(fault, start, end, deadline)
        arena.history.excuses.append(excuse)
        await arena.healed(fault, end)
        arena.notes.append(await _timed_out(arena, excuse))

    return nemesis


async def broker_down(arena: Arena, seconds: float = 30.0) -> None:
    """The broker out for `seconds`: on PostgreSQL + Kafka, every Kafka node stopped (SIGTERM,
    a controlled shutdown) and started again on its ports and log directory; on the embedded
    stack the broker paused on every service (the fault lab's switch). Nothing is published or
    delivered meanwhile, so a saga step's deadline may pass: those orders may end cancelled for
    the timeout."""
    start = time.time()
    if arena.kafka is not None:
        fault = "Kafka stopped"
        await asyncio.to_thread(_stop_kafka, arena.kafka)
        try:
            await asyncio.sleep(seconds)  # the fault's length
        finally:
            restarting = time.time()
            await asyncio.to_thread(_start_kafka, arena.kafka)
        arena.notes.append(f"Kafka serving again {time.time() - restarting:.1f} s after it was started")
    else:
        fault = "broker paused"
        await arena.pause_broker(True)
        try:
            await asyncio.sleep(seconds)
        finally:
            await arena.pause_broker(False)
    end = time.time()
    arena.history.excuses.append(deadline_passed(fault, start, end, SAGA_STEP_DEADLINE_S))
    await arena.healed(fault, end)


async def _timed_out(arena: Arena, excuse: Excuse, refunds_for: float = 60.0) -> str:
    """How the orders `excuse` covers ended, once they have: how many were cancelled on the
    deadline, and how many of those were charged late (by a service that woke up to its
    backlog) and refunded (waiting up to `refunds_for` seconds for the refunds to be made; the
    checker decides whether they all were)."""
    records = [r for r in arena.history.acknowledged if r.order_id and excuse.covers(r)]

    async def views() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(arena.shop.order(str(r.order_id)) for r in records)))

    async def ended() -> bool:
        return all(v["status"] in TERMINAL for v in await views())

    await arena.system.wait_until(ended, RECOVERY_TIMEOUT_S, "the orders the fault overlapped ended")
    timed_out = [v["id"] for v in await views() if (v["status"], v["cancel_reason"]) == ("cancelled", "timeout")]
    charged: set[str] = set()
    refunds: list[dict[str, Any]] = []

    async def refunded() -> None:
        nonlocal charged, refunds
        charged = {c["id"] for i in timed_out for c in await arena.shop.charges(i) if c["status"] == "succeeded"}
        refunds = [r for r in await arena.shop.refunds() if r["charge"] in charged]
        assert {r["charge"] for r in refunds} == charged

    with contextlib.suppress(AssertionError):  # the checker decides whether they all were
        await holds_within(refunded, refunds_for)
    return (
        f"of {len(records)} orders placed within the deadline before the fault or during it,"
        f" {len(timed_out)} were cancelled on the deadline; {len(charged)} of those were charged late"
        f" and got {len(refunds)} refunds"
    )


async def database_down(arena: Arena, seconds: float = 20.0) -> None:
    """PostgreSQL stopped at once (every backend gone, as in a crash or a lost host) for
    `seconds`, then started again: it recovers from its WAL and the services reconnect."""
    assert arena.postgres is not None, "the scenario needs a database server of its own"
    await asyncio.sleep(arena.rng.uniform(2.0, 6.0))
    await asyncio.to_thread(arena.postgres.crash)
    stopped = time.monotonic()
    await asyncio.sleep(seconds)  # the fault's length (this is the fault, not a wait for something)
    await asyncio.to_thread(arena.postgres.start)
    arena.notes.append(f"PostgreSQL down {time.monotonic() - stopped:.1f} s (stopped immediately, then recovered)")
    await arena.healed(f"PostgreSQL stopped {seconds:g} s", time.time())


def _stop_kafka(kafka: KafkaCluster) -> None:
    for node in kafka.nodes.values():
        node.terminate()
    for node in kafka.nodes.values():
        node.wait_stopped()


def _start_kafka(kafka: KafkaCluster) -> None:
    for node in kafka.nodes.values():
        node.start()
    kafka.wait_serving(set(kafka.nodes))


async def provider_down_slow_back(arena: Arena, down: float = 15.0, slow: float = 15.0) -> None:
    """The provider answers 503 to everything, then answers in 2.5 s (close to payments'
    deadline of a call), then as usual."""
    start = time.time()
    await arena.provider(down=True)
    try:
        await asyncio.sleep(down)
        await arena.provider(down=False, latency_ms=2500)
        await asyncio.sleep(slow)
    finally:
        await arena.provider(down=False, latency_ms=20)
    end = time.time()
    arena.history.excuses.append(Excuse("payment provider down, then slow", start, end, PROVIDER_UNREACHABLE))
    await arena.healed("payment provider down, then slow", end)


async def provider_port_cut(arena: Arena, seconds: float = 20.0) -> None:
    """Connections to the payment provider refused for `seconds`."""
    proxy = arena.provider_proxy
    assert proxy is not None, "the scenario must be started with the provider behind a proxy"
    start = time.time()
    proxy.cut()
    try:
        await asyncio.sleep(seconds)
    finally:
        proxy.mend()
    end = time.time()
    arena.history.excuses.append(Excuse("payment provider's port cut", start, end, PROVIDER_UNREACHABLE))
    await arena.healed("payment provider's port cut", end)


S = TypeVar("S")  # one look of a probe at its database


class HorizonProbe(abc.ABC, Generic[S]):
    """A database a transaction holds the xmin horizon of (`long_transaction`), and what is
    watched there meanwhile. The horizon is per database: a hold on one database keeps dead
    row versions in it alone."""

    #: The tables vacuumed as the hold ends and right after its release, and their name in the note.
    tables: ClassVar[tuple[str, ...]]
    vacuumed: ClassVar[str]
    #: The table the holding transaction reads to take its snapshot.
    held: ClassVar[sa.Table]

    @property
    @abc.abstractmethod
    def database(self) -> str:
        """The database, as the note names it."""

    @abc.abstractmethod
    def url(self, env: Mapping[str, str]) -> str:
        """The database's SQLAlchemy (asyncpg) URL, in the system's environment `env`."""

    @abc.abstractmethod
    async def sample(self, arena: Arena, conn: AsyncConnection) -> S:
        """One look at the database (`conn` is in autocommit: one snapshot a statement)."""

    @abc.abstractmethod
    def summary(self, samples: Sequence[S]) -> str:
        """What the samples of one phase say."""


async def _table_stats(conn: AsyncConnection, tables: Sequence[str]) -> dict[str, tuple[int, int]]:
    """table → (live, dead) row versions, as PostgreSQL's statistics count them, in the order of `tables`."""
    rows = await conn.execute(
        sa.text("select relname, n_live_tup, n_dead_tup from pg_stat_user_tables where relname = any(:tables)"),
        {"tables": list(tables)},
    )
    found = {name: (int(live), int(dead)) for name, live, dead in rows}
    return {table: found.get(table, (0, 0)) for table in tables}


def _dead(stats: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    return {table: dead for table, (_, dead) in stats.items()}


@dataclass(frozen=True)
class OutboxSample:
    """One look at a service's outbox: the rows not yet published and the age of the oldest one
    (read from its table), the same age as its relay's gauge last set it, and the table's dead
    row versions (those VACUUM may remove once no snapshot can see them)."""

    backlog: int
    oldest_age_s: float
    gauge_age_s: float | None
    dead_rows: int


@dataclass(frozen=True)
class OutboxProbe(HorizonProbe[OutboxSample]):
    """A service's database, watched through its outbox."""

    service: str = "orders"
    tables: ClassVar[tuple[str, ...]] = ("outbox",)
    vacuumed: ClassVar[str] = "the outbox"
    held: ClassVar[sa.Table] = outbox

    @property
    def database(self) -> str:
        return f"the {self.service} database"

    def url(self, env: Mapping[str, str]) -> str:
        url = env.get(f"{self.service.upper()}_DATABASE_URL", "")
        assert url.startswith("postgresql"), f"{self.service}'s database is not PostgreSQL: {url!r}"
        return url

    async def sample(self, arena: Arena, conn: AsyncConnection) -> OutboxSample:
        backlog, age = (
            await conn.execute(
                sa.text(
                    "select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)"
                    " from outbox where published_at is null"
                )
            )
        ).one()
        dead = _dead(await _table_stats(conn, self.tables)).get("outbox", 0)
        return OutboxSample(int(backlog), float(age), await _gauge(arena, self.service), dead)

    def summary(self, samples: Sequence[OutboxSample]) -> str:
        gauges = [s.gauge_age_s for s in samples if s.gauge_age_s is not None]
        return (
            f"outbox backlog max {max(s.backlog for s in samples)} rows, oldest"
            f" unpublished max {max(s.oldest_age_s for s in samples):.2f} s (gauge max"
            f" {max(gauges) if gauges else float('nan'):.2f} s),"
            f" dead rows {samples[0].dead_rows}→{samples[-1].dead_rows}"
        )


#: How many records one read of a partition asks for (a consumer's batch, `CONSUMER_BATCH_SIZE`).
LOG_READ_LIMIT = Settings.model_fields["consumer_batch_size"].default
#: Each consumer group's lag: the records of the topics it reads (those its live members
#: subscribe to, or it has committed offsets on) past its committed offsets.
LOG_LAG = """
with subscribed as (
    select distinct group_id, jsonb_array_elements_text(topics::jsonb) as topic from log_members
    union select distinct group_id, topic from log_offsets
)
select s.group_id, sum(p.next_offset - coalesce(o.committed, 0)) as lag
from subscribed s
join log_partitions p on p.topic = s.topic
left join log_offsets o on o.group_id = s.group_id and o.topic = p.topic and o.partition = p.partition
group by s.group_id
"""


@dataclass(frozen=True)
class LogSample:
    """One look at the sqllog on PostgreSQL: its records (live row versions), the dead row
    versions of each of its tables, the size of its bookkeeping (the tables other than the
    records, with their indexes), the consumer groups' lag (summed, and the worst group's), and
    the statements of a consumer's fetch: the end offsets of the partitions (its time as a
    consumer waits for it, and as the server spent it, with the pages it touched) and a read of
    the next records at each group's committed offset (the mean time of those reads)."""

    records: int
    dead: dict[str, int]
    bookkeeping_kb: int
    lag: int
    worst_lag: tuple[str, int]
    ends_ms: float
    ends_server_ms: float
    ends_pages: int
    read_ms: float
    reads: int


class SqlLogProbe(HorizonProbe[LogSample]):
    """The embedded broker's database, when it is PostgreSQL (`BROKER_URL=sqllog+postgresql://...`).
    Its records are only ever inserted (and deleted past the retention); its bookkeeping is
    updated in place all the time: a partition's end offset at every publish, a group's
    committed offset at every commit, members and leases at every heartbeat."""

    tables: ClassVar[tuple[str, ...]] = tuple(t.name for t in (records_t, partitions_t, offsets_t, leases_t, members_t))
    vacuumed: ClassVar[str] = "the log's tables"
    held: ClassVar[sa.Table] = records_t

    @property
    def database(self) -> str:
        return "the sqllog's database"

    def url(self, env: Mapping[str, str]) -> str:
        url = env.get("BROKER_URL", "").removeprefix("sqllog+")
        assert url.startswith("postgresql"), f"the broker is not the sqllog on PostgreSQL: {env.get('BROKER_URL')!r}"
        return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)

    async def sample(self, arena: Arena, conn: AsyncConnection) -> LogSample:
        return await self.look(conn)

    async def look(self, conn: AsyncConnection) -> LogSample:
        """One look at the log (it needs nothing of the running system but its database)."""
        stats = await _table_stats(conn, self.tables)
        bookkeeping = [t for t in self.tables if t != records_t.name]
        size = (
            await conn.execute(
                sa.text("select sum(pg_total_relation_size(t::regclass)) from unnest(cast(:tables as text[])) t"),
                {"tables": bookkeeping},
            )
        ).scalar()
        lags = {group: int(lag) for group, lag in await conn.execute(sa.text(LOG_LAG))}
        topics = list((await conn.execute(sa.select(topics_t.c.name))).scalars())
        ends = sa.select(partitions_t).where(partitions_t.c.topic.in_(topics))  # as a consumer of every topic asks
        began = time.perf_counter()
        await conn.execute(ends)
        ends_ms = 1000 * (time.perf_counter() - began)
        ends_server_ms, ends_pages = await _explained(conn, ends)
        committed = (await conn.execute(sa.select(offsets_t))).all()
        began = time.perf_counter()
        for row in committed:
            await conn.execute(
                sa.select(records_t)
                .where(
                    records_t.c.topic == row.topic,
                    records_t.c.partition == row.partition,
                    records_t.c.offset >= row.committed,
                )
                .order_by(records_t.c.offset)
                .limit(LOG_READ_LIMIT)
            )
        read_ms = 1000 * (time.perf_counter() - began) / max(1, len(committed))
        return LogSample(
            records=stats[records_t.name][0],
            dead=_dead(stats),
            bookkeeping_kb=int(size or 0) // 1024,
            lag=sum(lags.values()),
            worst_lag=max(lags.items(), key=lambda g: g[1], default=("-", 0)),
            ends_ms=ends_ms,
            ends_server_ms=ends_server_ms,
            ends_pages=ends_pages,
            read_ms=read_ms,
            reads=len(committed),
        )

    def summary(self, samples: Sequence[LogSample]) -> str:
        first, last = samples[0], samples[-1]
        worst = max(samples, key=lambda s: s.lag)
        dead = ", ".join(f"{t} {first.dead.get(t, 0)}→{last.dead.get(t, 0)}" for t in self.tables)

        def spread(values: Sequence[float]) -> str:
            return f"p50 {statistics.median(values):.2f} ms, max {max(values):.2f} ms"

        return (
            f"log records {first.records}→{last.records}; dead rows {dead};"
            f" bookkeeping {first.bookkeeping_kb}→{last.bookkeeping_kb} kB;"
            f" consumer lag max {worst.lag} records over all groups (worst group {worst.worst_lag[0]}"
            f" {worst.worst_lag[1]}); end offsets query {spread([s.ends_ms for s in samples])}"
            f" (server {spread([s.ends_server_ms for s in samples])},"
            f" pages {first.ends_pages}→{last.ends_pages});"
            f" read at a group's committed offset {spread([s.read_ms for s in samples])}"
            f" ({last.reads} partitions read)"
        )


async def _explained(conn: AsyncConnection, statement: sa.Select[Any]) -> tuple[float, int]:
    """Run `statement` under EXPLAIN ANALYZE: the server's time (ms) and the pages it touched."""
    sql = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    (plan,) = (await conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))).scalar_one()
    top = plan["Plan"]
    return float(plan["Execution Time"]), int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def held_database(env: Mapping[str, str]) -> HorizonProbe[Any] | None:
    """Where a long transaction hurts a stack most: the sqllog's database when the log is on
    PostgreSQL, else orders' database when it is PostgreSQL (None on the embedded stack)."""
    if env.get("BROKER_URL", "").startswith("sqllog+postgresql"):
        return SqlLogProbe()
    if env.get("ORDERS_DATABASE_URL", "").startswith("postgresql"):
        return OutboxProbe("orders")
    return None


def long_transaction(probe: HorizonProbe[Any] | None = None, seconds: float = 60.0, around: float = 20.0) -> Nemesis:
    """A REPEATABLE READ transaction on `probe`'s PostgreSQL database (by default the stack's
    `held_database`) that reads a table and stays open `seconds`, holding the database's xmin
    horizon (no row version deleted or updated since can be vacuumed: the slow death of
    SQL-backed queues). The probe samples the database every second for `around` seconds
    before, during and `around` seconds after; the note says what the hold did to it and to the
    orders' latency (placed → delivered) and deliveries a second."""

    async def nemesis(arena: Arena) -> None:
        watched = probe or held_database(arena.system.env)
        assert watched is not None, "no database of this stack is PostgreSQL"
        engine = create_async_engine(watched.url(arena.system.env), pool_size=2)
        try:
            async with engine.connect() as conn, engine.connect() as holder:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                phases: list[tuple[str, float, float, list[Any]]] = []
                began = time.time()
                phases.append(("before", began, *await _watch(arena, conn, watched, around)))
                await holder.execution_options(isolation_level="REPEATABLE READ")
                await holder.begin()
                held_at = time.time()
                await holder.execute(sa.select(sa.func.count()).select_from(watched.held))
                xmin = (
                    await holder.execute(
                        sa.text("select backend_xmin from pg_stat_activity where pid = pg_backend_pid()")
                    )
                ).scalar()
                assert xmin is not None, "the transaction holds no snapshot"
                try:
                    phases.append(("held", held_at, *await _watch(arena, conn, watched, seconds)))
                    kept_held = await _vacuum(conn, watched.tables)
                finally:
                    await holder.rollback()
                released = time.time()
                kept_released = await _vacuum(conn, watched.tables)
                phases.append(("after", released, *await _watch(arena, conn, watched, around)))
        finally:
            await engine.dispose()
        orders = await _orders_placed(arena, began - 10, time.time())
        arena.notes.append(
            f"{_hold_report(watched, seconds, phases, orders)}. VACUUM of {watched.vacuumed} as the hold ended"
            f" kept {_kept(kept_held)}, still visible to the old snapshot; right after it was released,"
            f" {_kept(kept_released)}"
        )
        await arena.healed(f"xmin held {seconds:g} s", released)

    return nemesis


async def _watch(arena: Arena, conn: AsyncConnection, probe: HorizonProbe[S], seconds: float) -> tuple[float, list[S]]:
    """Sample with `probe` once a second for `seconds`; (when it ended, the samples)."""
    samples: list[S] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(await probe.sample(arena, conn))
        await asyncio.sleep(max(0.0, min(1.0, end - time.monotonic())))  # the sampling period
    return time.time(), samples


async def _vacuum(conn: AsyncConnection, tables: Sequence[str]) -> dict[str, int]:
    """VACUUM `tables`; the dead row versions it had to keep in each (a snapshot may still see them)."""
    await conn.execute(sa.text(f"VACUUM {', '.join(tables)}"))
    return _dead(await _table_stats(conn, tables))


def _kept(dead: Mapping[str, int]) -> str:
    """Dead row versions kept, in all and (for several tables) in each."""
    kept = f"{sum(dead.values())} dead rows"
    return kept if len(dead) == 1 else f"{kept} ({', '.join(f'{table} {n}' for table, n in dead.items())})"


async def _gauge(
    arena: Arena, service: str, name: str = "pizzeria_outbox_oldest_unpublished_age_seconds"
) -> float | None:
    """A gauge of `service`'s /metrics, or None if it cannot be read."""
    try:
        response = await arena.shop.http.get(f"{arena.system.url(service)}/metrics")
    except Exception:
        return None
    for line in response.text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def _orders_placed(arena: Arena, since: float, until: float) -> list[tuple[OrderRecord, dict[str, Any]]]:
    """The acknowledged orders placed between `since` and `until`, each with its view now."""
    records = [r for r in arena.history.acknowledged if r.order_id and since <= r.place.started < until]
    views = await asyncio.gather(*(arena.shop.order(str(r.order_id)) for r in records))
    return list(zip(records, views, strict=True))


def _hold_report(
    probe: HorizonProbe[S],
    seconds: float,
    phases: Sequence[tuple[str, float, float, Sequence[S]]],
    orders: Sequence[tuple[OrderRecord, dict[str, Any]]],
) -> str:
    """What holding the xmin horizon did, phase by phase."""
    delivered = [
        (record.place.started, epoch(view["history"][-1]["at"]))
        for record, view in orders
        if view["status"] == "delivered"
    ]
    parts = []
    for name, start, end, samples in phases:
        latencies = sorted(done - placed for placed, done in delivered if start <= placed < end)
        p50 = statistics.median(latencies) if latencies else float("nan")
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else float("nan")
        rate = sum(1 for _, done in delivered if start <= done < end) / max(end - start, 1e-9)
        parts.append(
            f"{name} ({end - start:.0f} s): {probe.summary(samples)};"
            f" placed→delivered p50 {p50:.2f} s, p95 {p95:.2f} s; {rate:.2f} delivered/s"
        )
    return f"xmin held {seconds:g} s on {probe.database} — " + " | ".join(parts)


def crash_points(points: Sequence[tuple[str, str]]) -> Nemesis:
    """Wait for each (service, failpoint) armed by the scenario's `PIZZERIA_FAILPOINTS` to
    have crashed its process (its marker file written), and for orders to flow again after."""

    async def nemesis(arena: Arena) -> None:
        for service, point in points:
            marker = arena.system.workdir / "var" / "failpoints" / service / f"{point}.fired"

            async def fired(marker: Path = marker) -> bool:
                return marker.exists()

            await arena.system.wait_until(fired, RECOVERY_TIMEOUT_S, f"{service} crashed at {point}")
            await arena.healed(f"{service} crashed at {point}", marker.stat().st_mtime)

    return nemesis


#: Crashes where they hurt most (kit/failpoints.py): a relay before publishing a batch, or
#: between publishing it and marking it published (sent again after the restart); a consumer in
#: the middle of a batch before its transaction commits, or after it commits and before its
#: offsets do (the records come again: its inbox must drop them, or a charge is made twice).
CRASH_POINTS = (
    ("payments", "relay.before_publish", 15),
    ("payments", "consume.payments.committed", 25),
    ("orders", "relay.after_publish", 30),
    ("orders", "consume.orders.committed", 60),
    ("kitchen", "consume.kitchen", 25),
    ("delivery", "relay.after_publish", 15),
    ("notifications", "consume.notifications", 40),
)


def soak_minutes() -> float:
    """How long the soak lasts: CHAOS_SOAK_MINUTES, 30 by default."""
    return float(os.environ.get("CHAOS_SOAK_MINUTES", "30"))


#: The soak's steady rate (orders a second): about 1,800 orders in its 30 minutes, every one read
#: back and checked at the end.
SOAK_RATE = 1.0


def soak(minutes: Callable[[], float] = soak_minutes) -> Nemesis:
    """`minutes` of steady load with a nemesis fired at random every 5 to 30 s (each waiting for
    orders to flow again before the next): kill -9 of any service, SIGSTOP of one past the
    session timeout, the payment provider down then slow, or its port cut, the broker out, and
    on PostgreSQL a transaction holding the xmin horizon."""

    async def nemesis(arena: Arena) -> None:
        end = time.monotonic() + 60 * minutes()
        pausable = ("payments", "kitchen", "orders", "delivery", "notifications")
        faults: list[tuple[str, Nemesis]] = [
            *((f"kill -9 {s}", kill((s,))) for s in KILLABLE),
            *((f"SIGSTOP {s}", pause(s)) for s in pausable),
            ("provider down, slow", functools.partial(provider_down_slow_back, down=10.0, slow=10.0)),
            ("broker out", functools.partial(broker_down, seconds=20.0)),
        ]
        if arena.provider_proxy is not None:
            faults.append(("provider port cut", functools.partial(provider_port_cut, seconds=15.0)))
        if held_database(arena.system.env) is not None:
            faults.append(("xmin held", long_transaction(seconds=30.0, around=5.0)))
        fired: list[str] = []
        while True:
            gap = arena.rng.uniform(5.0, 30.0)  # the steady load alone, between two faults
            if time.monotonic() + gap >= end:
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                break
            await asyncio.sleep(gap)
            name, fault = arena.rng.choice(faults)
            fired.append(name)
            await fault(arena)
        arena.notes.append(f"{len(fired)} faults in {minutes():g} min: {', '.join(fired) or 'none'}")

    return nemesis


@dataclass(frozen=True)
class Scenario:
    id: str  # how `--scenario` names it
    name: str
    nemeses: tuple[Nemesis, ...]
    provider_proxied: bool = False
    env: dict[str, str] = field(default_factory=dict)
    stacks: frozenset[str] = STACKS  # where it applies
    #: A PostgreSQL server made for the scenario, so that it may be stopped (the shared test
    #: server never is).
    own_database: bool = False
    #: The most orders a second it is run with (None: the campaign's rate).
    max_rate: Callable[[], float] | None = None


SCENARIOS = {
    s.id: s
    for s in (
        Scenario("kill", "kill -9 each service, 2 rounds", (kill(KILLABLE, rounds=2),)),
        Scenario(
            "crash-points",
            "crashes inside relays and consumers (failpoints)",
            (crash_points([(service, point) for service, point, _ in CRASH_POINTS]),),
            env={"PIZZERIA_FAILPOINTS": ",".join(f"{service}:{point}=crash@{n}" for service, point, n in CRASH_POINTS)},
        ),
        Scenario("pause-payments", "SIGSTOP payments 10 s", (pause("payments"),)),
        Scenario("pause-kitchen", "SIGSTOP kitchen 10 s", (pause("kitchen"),)),
        Scenario("pause-orders", "SIGSTOP orders 10 s", (pause("orders"),)),
        Scenario("provider-outage", "provider down 15 s, slow 15 s, back", (provider_down_slow_back,)),
        Scenario("provider-port-cut", "provider port cut 20 s", (provider_port_cut,), provider_proxied=True),
        Scenario(
            "broker-stop", "Kafka stopped 30 s, started again", (broker_down,), stacks=frozenset({"postgres+kafka"})
        ),
        Scenario("broker-pause", "broker paused 30 s (fault lab)", (broker_down,), stacks=SQLLOG_STACKS),
        Scenario(
            "payment-deadline",
            f"SIGSTOP payments past its {SHORT_PAYMENT_TIMEOUT_S:g} s deadline",
            (
                pause(
                    "payments", SHORT_PAYMENT_TIMEOUT_S + 10, deadline=SHORT_PAYMENT_TIMEOUT_S, charges_in_flight=True
                ),
            ),
            env={"SAGA_PAYMENT_TIMEOUT_S": str(SHORT_PAYMENT_TIMEOUT_S)},
        ),
        Scenario(
            "postgres-stop",
            "PostgreSQL stopped 20 s, started again",
            (database_down,),
            stacks=frozenset({"postgres+kafka"}),
            own_database=True,
        ),
        Scenario(
            "soak",
            "soak: steady load, nemeses at random (CHAOS_SOAK_MINUTES, 30 by default)",
            (soak(),),
            provider_proxied=True,
            max_rate=lambda: SOAK_RATE,
        ),
        Scenario(
            "xmin-hold",
            "transaction holding xmin 60 s (the sqllog's database, else orders')",
            (long_transaction(),),
            stacks=STACKS - {"embedded"},
        ),
    )
}


@dataclass
class Outcome:
    scenario: str
    stack: str
    result: Result
    recoveries: list[tuple[str, float]]
    seconds: float
    notes: list[str] = field(default_factory=list)

    HEADER = (
        "scenario",
        "stack",
        "acknowledged",
        "unanswered",
        "finished",
        "lost",
        "duplicated",
        "other violations",
        "excused",
        "recovery s",
    )
    #: Counts shown in columns of their own (or not violations at all).
    SHOWN = ("acknowledged", "finished", "unanswered", "excused", "lost", "duplicated")

    def recovery(self) -> str:
        """The worst recovery (and which fault it followed), with the median when there were more."""
        if not self.recoveries:
            return "-"
        fault, worst = max(self.recoveries, key=lambda r: r[1])
        if len(self.recoveries) == 1:
            return f"{worst:.1f}"
        median = sorted(s for _, s in self.recoveries)[len(self.recoveries) // 2]
        return f"{worst:.1f} ({fault}); median of {len(self.recoveries)}: {median:.1f}"

    def row(self) -> tuple[str, ...]:
        counts = self.result.counts()
        other = sum(n for kind, n in counts.items() if kind not in self.SHOWN)
        return (
            self.scenario,
            self.stack,
            str(counts["acknowledged"]),
            str(counts["unanswered"]),
            str(counts["finished"]),
            str(counts["lost"]),
            str(counts["duplicated"]),
            str(other),
            str(counts["excused"]),
            self.recovery(),
        )


def notes(outcomes: Sequence[Outcome]) -> str:
    """What the nemeses measured besides the table, a Markdown list."""
    return "".join(f"- {o.scenario} ({o.stack}): {note}\n" for o in outcomes for note in o.notes)


def table(outcomes: Sequence[Outcome]) -> str:
    """A Markdown table of the outcomes."""
    rows = [Outcome.HEADER, *(o.row() for o in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(Outcome.HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


async def run(
    scenario: Scenario,
    workdir: Path,
    *,
    stack: str = "embedded",
    env: dict[str, str] | None = None,
    seed: int = 1,
    rate: float = 3.0,
    tail: int = 10,
    kafka: KafkaCluster | None = None,
    postgres: PrivateServer | None = None,
) -> Outcome:
    """One scenario on a system of its own: start it, load it, fire the nemeses one after the
    other, keep the load on until `tail` orders placed after the last fault were answered, then
    check everything."""
    began = time.monotonic()
    if scenario.max_rate is not None:
        rate = min(rate, scenario.max_rate())
    system = System(workdir, {**CHAOS_ENV, **scenario.env, **(env or {})})
    proxy = None
    if scenario.provider_proxied:
        proxy = TcpProxy(system.ports["provider"]).start()
        system.env["PAYMENT_PROVIDER_URL"] = f"http://127.0.0.1:{proxy.listen_port}"
    shop, edge = Shop(system), Shop(system, through_gateway=True)
    history = History()
    arena = Arena(system, shop, history, random.Random(seed), proxy, kafka, postgres)
    try:
        await system.start()
        await wait_for_menu_sync(shop, await shop.menu())
        await stock_up(shop)
        load = Load(edge, history, rate=rate, seed=seed)
        await load.start()
        try:
            await arena.flowing_since(time.time())  # the load flows before anything breaks
            for nemesis in scenario.nemeses:
                await nemesis(arena)
            last = time.time()
            await system.wait_until(
                lambda: _answered_since(history, last, tail), RECOVERY_TIMEOUT_S, f"{tail} orders after the faults"
            )
        finally:
            await load.stop()
        result = await check_system(shop, history)
        return Outcome(scenario.name, stack, result, arena.recoveries, time.monotonic() - began, arena.notes)
    finally:
        await shop.close()
        await edge.close()
        system.stop()
        if proxy is not None:
            proxy.close()


async def _answered_since(history: History, since: float, count: int) -> bool:
    return sum(1 for r in history.acknowledged if r.place.started >= since) >= count


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


async def campaign(args: argparse.Namespace) -> int:
    names = args.scenario or list(SCENARIOS)
    outcomes: list[Outcome] = []
    tmp = tempfile.mkdtemp(prefix="pizzeria-chaos-")
    for stack_name in args.stack or ["embedded"]:
        with Stack(stack_name, Path(tmp)) as stack:
            for n, name in enumerate(names):
                if stack_name not in SCENARIOS[name].stacks:
                    print(f"chaos: {SCENARIOS[name].name} does not apply to {stack_name}", flush=True)
                    continue
                workdir = Path(tmp) / f"{stack_name}-{n}"
                workdir.mkdir()
                print(f"chaos: {SCENARIOS[name].name} ({stack_name})...", flush=True)
                began = time.monotonic()
                try:
                    async with stack.env(own_database=SCENARIOS[name].own_database) as (env, postgres):
                        outcome = await run(
                            SCENARIOS[name],
                            workdir,
                            stack=stack_name,
                            env=env,
                            seed=args.seed + n,
                            rate=args.rate,
                            kafka=stack.kafka,
                            postgres=postgres,
                        )
                except Exception as error:  # the next scenarios still run; the table says it failed
                    failed = Result()
                    failed.add(FAILED, f"{type(error).__name__}: {error}")
                    outcome = Outcome(SCENARIOS[name].name, stack_name, failed, [], time.monotonic() - began)
                outcomes.append(outcome)
                print(outcome.result.table(), f"\n({outcome.seconds:.0f} s)\n", flush=True)
                print(table(outcomes), "\n", flush=True)  # so far
                print(notes(outcomes), flush=True)
    if args.report:
        _report(Path(args.report), outcomes, sys.argv[1:])
    if all(o.result.ok and not o.result.unanswered for o in outcomes):
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    print(f"the systems' logs and data are kept in {tmp}", file=sys.stderr)
    return 1


class Stack:
    """Where the scenarios run: the embedded stack; PostgreSQL and one Apache Kafka broker
    (started once for the campaign, as the whole-system tests share theirs); or PostgreSQL with
    the sqllog in a database of its own. On PostgreSQL each scenario has databases of its own."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.kafka: KafkaCluster | None = None

    def __enter__(self) -> Stack:
        if self.name == "postgres+kafka":
            self.kafka = KafkaCluster(Path(tempfile.mkdtemp(dir=self.tmp, prefix="kafka-"))).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kafka is not None:
            self.kafka.stop()

    async def _databases(self, admin_dsn: str) -> tuple[dict[str, str], list[str]]:
        if self.kafka is not None:
            return await production_env(self.kafka, admin_dsn=admin_dsn)
        return await sqllog_postgres_env(admin_dsn=admin_dsn)

    @contextlib.asynccontextmanager
    async def env(self, *, own_database: bool = False) -> AsyncIterator[tuple[dict[str, str], PrivateServer | None]]:
        """The environment that selects the stack, for one scenario, and the PostgreSQL server
        made for it (with `own_database`; otherwise its databases are on the shared one)."""
        if self.name == "embedded":
            yield {}, None
            return
        server = (await asyncio.to_thread(PrivateServer().start)) if own_database else None
        try:
            if server is not None:
                env, _ = await self._databases(server.admin_dsn)
                yield env, server  # its databases go with the server
                return
            env, databases = await self._databases(ADMIN_DSN)
            try:
                yield env, None
            finally:
                for url in databases:
                    await drop_database(url)
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)


def _report(path: Path, outcomes: Sequence[Outcome], argv: Sequence[str]) -> None:
    """Write the table into `path`, between the markers that hold the latest one."""
    begin, end = "<!-- chaos-table:begin -->", "<!-- chaos-table:end -->"
    measured = (
        f"{begin}\nMeasured at commit `{commit()}` with `python -m tests.chaos.campaign {' '.join(argv)}`"
        f" on {datetime.now().date().isoformat()}:\n\n{table(outcomes)}\n"
        f"{f'{chr(10)}{notes(outcomes)}' if any(o.notes for o in outcomes) else ''}{end}"
    )
    text = path.read_text() if path.exists() else f"{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{measured}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="run only this one (repeatable)")
    parser.add_argument(
        "--stack", action="append", choices=sorted(STACKS), help="embedded (the default), or others (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=3.0, help="orders placed per second")
    parser.add_argument("--report", help="write the table into this Markdown file (docs/reliability.md)")
    return asyncio.run(campaign(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
