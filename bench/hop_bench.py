"""CPU per message of each hop a message takes through the system, one hop at a time.

A message is published by a relay and consumed by a group; in between it costs CPU at seven
hops. Each is driven here alone, with the system's own code, on a database and a broker of the
stack, in runs of `batch` messages (the consumers and relays work in runs; under load a run holds
tens of messages, idle one). CPU is counted in every process the hop uses: this one (with
librdkafka's threads), the database's backends (PostgreSQL) and the broker's JVM (Kafka); on the
embedded stack SQLite and the sqllog broker run in this process.

- consume: fetch from the broker, decode each record's envelope and payload, commit offsets;
- inbox: claim the run's message ids (one multi-row insert) inside the handler's transaction;
- handler: the kitchen's `ReserveIngredients` handler (recipes read, stock checked, hold
  written; one reply each), as the consumer runs it, without the other hops' shares;
- outbox: wrap each reply in its envelope and insert the run's rows (one statement);
- commit: begin and commit the run's transaction;
- relay: select a run of unpublished outbox rows, build the records, mark them published;
- publish: hand the records to the broker and wait for every acknowledgement.

Inbox, outbox and commit come from three kinds of transaction (claims only, replies only, both):
each share is the difference of two (each run three times, the least taken). The handler is
the consumer's whole transaction less those and less the decoding. Spans are not exported here
(no tracer is set up); in the services each message's span comes on top (docs/performance.md
gives its cost). The sum of the hops is what a message costs with nothing else running: the
system bench's CPU per order, divided by its messages, shows what the rest (HTTP, background
loops, polling, tracing) adds."""

from __future__ import annotations

import contextlib
import resource
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from tests.support.postgres import ADMIN_DSN

from bench.stacks import BROKER_NOTE, database_and_broker
from pizzeria.contracts.kitchen import KitchenLine, ReserveIngredients
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.messaging import inbox
from pizzeria.messaging.broker import Broker, BrokerConsumer, OutgoingMessage, Record, TopicSpec
from pizzeria.messaging.consumer import ConsumerRunner
from pizzeria.messaging.deadletters import DeadLetterStore
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.relay import OutboxRelay
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.kitchen import handlers as kitchen_handlers
from pizzeria.services.kitchen import repository as kitchen_repository
from pizzeria.services.kitchen.app import MIGRATIONS as KITCHEN_MIGRATIONS

#: Each hop whose share is a difference of measurements is run this many times; the least counts.
REPEATS = 3
HOPS = ("consume", "inbox", "handler", "outbox", "commit", "relay", "publish")
TOPIC = "bench.hops"
PIZZA = uuid.UUID("00000000-0000-7000-8000-00000000b001")


def _on_cpu(pid: int) -> float:
    """Seconds every thread of a process has run so far (schedstat: nanoseconds, where /proc's
    stat counts clock ticks of 10 ms, too coarse for a few hundred transactions)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


class Meter:
    """CPU seconds used so far by this process, the database's backends and the broker."""

    def __init__(self, database: str | None, broker_pids: Sequence[int]) -> None:
        self.database = database
        self.broker_pids = list(broker_pids)
        self.admin: asyncpg.Connection | None = None

    async def __aenter__(self) -> Meter:
        if self.database is not None:
            self.admin = await asyncpg.connect(ADMIN_DSN)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def read(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        backends: dict[int, float] = {}
        if self.admin is not None:
            for row in await self.admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database):
                with contextlib.suppress(OSError):  # a backend that just ended
                    backends[row["pid"]] = _on_cpu(row["pid"])
        return {
            "own": usage.ru_utime + usage.ru_stime,
            "db": backends,
            "broker": sum(_on_cpu(pid) for pid in self.broker_pids),
        }

    async def measure(self, work: Callable[[], Awaitable[Any]]) -> dict[str, float]:
        """CPU seconds `work` cost, by where it was spent."""
        before = await self.read()
        await work()
        after = await self.read()
        return {
            "own": after["own"] - before["own"],
            "db": sum(cpu - before["db"].get(pid, 0.0) for pid, cpu in after["db"].items()),
            "broker": after["broker"] - before["broker"],
        }


@contextlib.asynccontextmanager
async def environment(stack: str, workdir: Path) -> AsyncIterator[tuple[Database, Broker, Meter]]:
    async with database_and_broker(
        stack,
        workdir,
        name="pzbench_hops",
        migrations=[MESSAGING_MIGRATIONS, KITCHEN_MIGRATIONS],
        topics=[TopicSpec(TOPIC, partitions=1)],
    ) as parts:
        kafka = parts.kafka.nodes.values() if parts.kafka else ()
        async with Meter(parts.database, [node.process.pid for node in kafka if node.process]) as meter:
            yield parts.db, parts.broker, meter


class NoBroker(Broker):
    """Takes whatever the relay publishes and does nothing with it (the relay's own share)."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        pass

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        raise NotImplementedError("the relay's share is measured without consumers")

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        pass


def _command() -> ReserveIngredients:
    line = KitchenLine(menu_item_id=PIZZA, name="Margherita", size="m", quantity=1)
    return ReserveIngredients(order_id=uuid.uuid4(), lines=[line])


def _records(n: int) -> list[Record]:
    records = []
    for offset in range(n):
        command = _command()
        out = Envelope.wrap(command, source="/orders").to_outgoing(command.topic())
        records.append(Record(command.topic(), 0, offset, out.value, out.key, dict(out.headers), 0))
    return records


def _runs(items: Sequence[Any], batch: int) -> list[Sequence[Any]]:
    return [items[i : i + batch] for i in range(0, len(items), batch)]


async def _prepare_kitchen(db: Database) -> None:
    await kitchen_handlers.seed_opening_stock(UnitOfWork(db, source="/kitchen"))
    async with UnitOfWork(db, source="/kitchen") as uow:
        await kitchen_repository.apply_recipe(uow.conn, PIZZA, "Margherita", {"tomato_sauce": 1}, 1)
        await kitchen_repository.set_on_hand(uow.conn, "tomato_sauce", 10**9, utcnow())
        await uow.commit()


async def measure(db: Database, broker: Broker, meter: Meter, batch: int, n: int) -> dict[str, float]:
    """µs of CPU per message at each hop, in runs of `batch` messages."""
    uow = lambda: UnitOfWork(db, source="/kitchen")  # noqa: E731
    runner = ConsumerRunner(
        group=f"hops-{batch}",
        handlers=kitchen_handlers.build_handlers(),
        broker=broker,
        uow_factory=uow,
        dead_letters=DeadLetterStore(db, uow),
    )
    replies = [ReserveIngredients(order_id=uuid.uuid4(), lines=[]) for _ in range(batch)]

    async def transactions(*, claims: bool, emits: bool) -> None:
        for _ in range(n // batch):
            async with uow() as u:
                if claims:
                    await inbox.claim_many(u.conn, runner.group, [str(uuid.uuid4()) for _ in range(batch)])
                if emits:
                    for reply in replies:
                        u.emit(reply)
                await u.commit()

    def decode(record: Record) -> None:
        envelope = Envelope.from_record(record)
        route = runner.handlers.get(envelope.type)
        assert route is not None, envelope.type
        route.decode(envelope)

    records = _records(n)

    async def decode_all() -> None:
        for record in records:
            decode(record)

    commands: list[list[Sequence[Record]]] = [_runs(_records(n), batch) for _ in range(REPEATS)]

    async def handle() -> None:
        for run in commands.pop():
            await runner.process_batch(run)  # as the consumer hands it a fetch

    async def least(work: Callable[[], Awaitable[Any]]) -> float:
        """µs per message, the least of REPEATS runs (the others met more of the machine's noise)."""
        return min([_per_message(await meter.measure(work), n) for _ in range(REPEATS)])

    relayed = 0

    async def relay() -> None:
        nonlocal relayed
        r = OutboxRelay(db, NoBroker(), batch_size=batch, poll_interval=1.0)
        while sent := await r.publish_pending():
            relayed += sent

    outgoing = [Envelope.wrap(_command(), source="/orders").to_outgoing(TOPIC) for _ in range(n)]

    async def publish() -> None:
        for run in _runs(outgoing, batch):
            await broker.publish(run)

    consumed = 0

    async def consume() -> dict[str, float]:
        # A new group, reading the topic from its start (everything the publish runs put there).
        consumer = broker.consumer(f"hops-consume-{batch}", [TOPIC])
        await consumer.start()
        try:
            first: list[Record] = []
            while not first:  # joined its group and fetching: from here on it counts
                first = await consumer.fetch(batch, timeout=1.0)

            async def rest() -> None:
                nonlocal consumed
                while consumed < n - len(first):
                    got = await consumer.fetch(batch, timeout=1.0)
                    for record in got:
                        decode(record)
                    if got:
                        await consumer.commit({(TOPIC, got[-1].partition): got[-1].offset + 1})
                        consumed += len(got)

            return await meter.measure(rest)
        finally:
            await consumer.close()

    cost: dict[str, float] = {}
    both = await least(lambda: transactions(claims=True, emits=True))
    claims_only = await least(lambda: transactions(claims=True, emits=False))
    emits_only = await least(lambda: transactions(claims=False, emits=True))
    cost["inbox"] = both - emits_only
    cost["outbox"] = both - claims_only
    cost["commit"] = claims_only + emits_only - both
    decoding = await least(decode_all)
    cost["handler"] = await least(handle) - both - decoding
    spent = await meter.measure(relay)  # every reply written above, in runs of `batch`
    cost["relay"] = _per_message(spent, relayed)
    cost["publish"] = _per_message(await meter.measure(publish), n)
    cost["consume"] = _per_message(await consume(), consumed)
    return {hop: round(cost[hop], 1) for hop in HOPS}


def _per_message(spent: dict[str, float], n: int) -> float:
    return sum(spent.values()) / max(n, 1) * 1e6


async def run(stack: str, *, batches: Sequence[int] = (1, 10, 100), messages: int = 3000) -> dict[str, Any]:
    """µs of CPU per message at each hop, for each run size."""
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pzhops-") as tmp:
        async with environment(stack, Path(tmp)) as (db, broker, meter):
            await _prepare_kitchen(db)
            for batch in batches:
                n = messages if batch > 1 else messages // 3  # one at a time costs most: fewer
                started = time.perf_counter()
                figures[str(batch)] = await measure(db, broker, meter, batch, n - n % batch)
                figures[str(batch)]["seconds"] = round(time.perf_counter() - started, 1)
    return {"stack": stack, "broker": BROKER_NOTE[stack], "per_message_us": figures}
