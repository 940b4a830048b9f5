"""The transactional outbox and its relay, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

import orjson
import pytest
import sqlalchemy as sa

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.messaging.broker import Broker, BrokerConsumer, BrokerError, OutgoingMessage, Record
from pizzeria.messaging.message import Message
from pizzeria.messaging.relay import OutboxRelay
from pizzeria.messaging.sqllog import SqlLogBroker
from pizzeria.messaging.tables import outbox
from pizzeria.messaging.uow import UnitOfWork
from tests.integration.conftest import widgets
from tests.support.polling import eventually
from tests.support.postgres import VANISHED_PEER_BOUNDS, peer_bounds


class WidgetMade(Message, context="test", key="owner"):
    """Test event: one per widget."""

    owner: str
    n: int


def uow(db: Database, relay: OutboxRelay | None = None) -> UnitOfWork:
    return UnitOfWork(db, source="/pizzeria/test", on_commit=relay.wake if relay else None)


async def make_widget(db: Database, owner: str, n: int, relay: OutboxRelay | None = None, pause: float = 0.0) -> None:
    async with uow(db, relay) as work:
        await work.conn.execute(widgets.insert().values(id=f"{owner}-{n}", owner=owner, n=n))
        work.emit(WidgetMade(owner=owner, n=n))
        if pause:
            await asyncio.sleep(pause)  # hold the transaction open so commits interleave
        await work.commit()


async def count(db: Database, query: sa.Select) -> int:  # type: ignore[type-arg]
    async with db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def consume_all(broker: Broker, want: int, group: str = "reader", timeout: float = 30) -> list[Record]:
    consumer: BrokerConsumer = broker.consumer(group, ["test.events"])
    await consumer.start()
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += await consumer.fetch(1000, timeout=0.2)
    await consumer.close()
    return got


async def test_state_and_outbox_commit_together_or_not_at_all(db: Database) -> None:
    await make_widget(db, "alice", 1)
    with pytest.raises(RuntimeError):
        async with uow(db) as work:
            await work.conn.execute(widgets.insert().values(id="alice-2", owner="alice", n=2))
            work.emit(WidgetMade(owner="alice", n=2))
            raise RuntimeError("crash before commit")

    assert await count(db, sa.select(sa.func.count()).select_from(widgets)) == 1
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(outbox))).all()
    assert len(rows) == 1
    headers = orjson.loads(rows[0].headers)
    assert headers["ce_type"] == "pizzeria.test.WidgetMade.v1"
    assert headers["ce_subject"] == "alice" == rows[0].key
    assert rows[0].published_at is None


async def test_relay_publishes_in_order_and_marks_rows(db: Database, sqllog: SqlLogBroker) -> None:
    for n in range(50):
        await make_widget(db, f"owner{n % 4}", n)
    relay = OutboxRelay(db, sqllog, batch_size=7)
    while await relay.publish_pending():
        pass
    assert await count(db, sa.select(sa.func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))) == 0

    got = await consume_all(sqllog, 50)
    per_owner: dict[str, list[int]] = defaultdict(list)
    for r in got:
        data = orjson.loads(r.value)
        per_owner[data["owner"]].append(data["n"])
    assert sum(len(v) for v in per_owner.values()) == 50
    for owner, ns in per_owner.items():
        assert ns == sorted(ns), f"{owner}'s events out of order"


class FlakyBroker(Broker):
    """Wraps a real broker; the first `failures` publishes fail (after writing half the batch,
    as a broker that dies mid-batch would)."""

    def __init__(self, inner: Broker, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def create_topics(self, topics) -> None:  # type: ignore[no-untyped-def]
        await self.inner.create_topics(topics)

    def consumer(self, group, topics, *, client_id=""):  # type: ignore[no-untyped-def]
        return self.inner.consumer(group, topics, client_id=client_id)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            await self.inner.publish(messages[: len(messages) // 2])
            raise BrokerError("broker went away mid-batch")
        await self.inner.publish(messages)


async def test_a_failed_batch_is_retried_and_nothing_is_lost(db: Database, sqllog: SqlLogBroker) -> None:
    for n in range(20):
        await make_widget(db, "bob", n)
    flaky = FlakyBroker(sqllog, failures=3)
    relay = OutboxRelay(db, flaky, batch_size=100, poll_interval=0.05)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 20, every=0.02)
    finally:
        relay.stop()
        await task
    assert flaky.attempts >= 4
    got = await consume_all(sqllog, 20 + 3 * 10)
    ns = [orjson.loads(r.value)["n"] for r in got]
    assert set(ns) == set(range(20)), "every row must reach the broker"
    # At least once: the half batches went out twice, yet the first copy of each is in order.
    first_seen = list(dict.fromkeys(ns))
    assert first_seen == list(range(20))


async def _backlog_is(db: Database, n: int) -> bool:
    return await count(db, sa.select(sa.func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))) == n


async def test_no_row_is_skipped_when_transactions_commit_out_of_order(db: Database, sqllog: SqlLogBroker) -> None:
    """Writers hold their transactions open for random times, so rows with a lower `seq` commit
    after rows with a higher one while the relay is publishing."""
    relay = OutboxRelay(db, sqllog, batch_size=16, poll_interval=0.02)
    task = asyncio.create_task(relay.run())
    writers, per_writer = 8, 25

    async def writer(w: int) -> None:
        for n in range(per_writer):
            await make_widget(db, f"w{w}", n, relay, pause=random.random() * 0.01)

    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 20, every=0.02)
    finally:
        relay.stop()
        await task
    got = await consume_all(sqllog, writers * per_writer)
    per_owner: dict[str, list[int]] = defaultdict(list)
    for r in got:
        data = orjson.loads(r.value)
        per_owner[data["owner"]].append(data["n"])
    for w in range(writers):
        assert per_owner[f"w{w}"] == list(range(per_writer)), f"writer {w}: lost or reordered"


async def test_the_committing_unit_of_work_wakes_the_relay(db: Database, sqllog: SqlLogBroker) -> None:
    relay = OutboxRelay(db, sqllog, poll_interval=3600)  # polling alone would take an hour
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0)  # let it reach its first wait
        await make_widget(db, "carol", 1, relay)
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 10, every=0.02)
    finally:
        relay.stop()
        await task


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_commit_in_another_process_wakes_the_relay_through_notify(db: Database, sqllog: SqlLogBroker) -> None:
    relay = OutboxRelay(db, sqllog, poll_interval=3600)
    task = asyncio.create_task(relay.run())
    other_process = Database(db.url)  # its own engine and connections, no in-process signal
    try:
        await eventually(lambda: _listening(relay), "the relay never listened", 20, every=0.02)
        await make_widget(other_process, "dave", 1)
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 10, every=0.02)
    finally:
        relay.stop()
        await task
        await other_process.dispose()


async def _listening(relay: OutboxRelay) -> bool:
    return relay._leader is not None


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_two_relays_on_one_database_publish_each_row_once(db: Database, sqllog: SqlLogBroker) -> None:
    relays = [OutboxRelay(db, sqllog, batch_size=10, poll_interval=0.01) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await asyncio.gather(*(make_widget(db, f"o{n % 3}", n, relays[n % 2]) for n in range(120)))
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 20, every=0.02)
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
    got = await consume_all(sqllog, 120)
    ids = [r.headers["ce_id"] for r in got]
    assert len(ids) == 120
    assert len(set(ids)) == 120, "the advisory lock must keep two relays from sending a row twice"


async def test_published_rows_are_pruned_after_retention_and_unpublished_never(
    db: Database, sqllog: SqlLogBroker
) -> None:
    for n in range(6):
        await make_widget(db, "erin", n)
    relay = OutboxRelay(db, sqllog, retention=60)
    await relay.publish_pending()
    await make_widget(db, "erin", 99)  # stays unpublished
    async with db.transaction() as conn:  # age three of the published rows past the retention
        old = (
            (
                await conn.execute(
                    sa.select(outbox.c.seq).where(outbox.c.published_at.is_not(None)).order_by(outbox.c.seq).limit(3)
                )
            )
            .scalars()
            .all()
        )
        await conn.execute(
            outbox.update().where(outbox.c.seq.in_(old)).values(published_at=utcnow() - timedelta(hours=2))
        )
    assert await relay.prune() == 3
    assert await count(db, sa.select(sa.func.count()).select_from(outbox)) == 4
    assert await _backlog_is(db, 1)
    backlog, age = await relay.backlog()
    assert backlog == 1
    assert age >= 0


async def test_relay_survives_a_broker_outage(db: Database, sqllog: SqlLogBroker) -> None:
    await make_widget(db, "frank", 1)
    flaky = FlakyBroker(sqllog, failures=1_000_000)
    relay = OutboxRelay(db, flaky, poll_interval=0.01)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _attempted(flaky, 3), "the relay never tried three times", 20, every=0.02)
        assert await _backlog_is(db, 1), "nothing may be marked while the broker refuses it"
        flaky.failures = 0
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 20, every=0.02)
    finally:
        relay.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_relay_that_gives_up_the_lead_after_a_failed_batch_lets_another_process_lead(
    db: Database, sqllog: SqlLogBroker
) -> None:
    """Giving up the lead ends the lock's session: closed as usual, the connection would go back
    to its pool with the lock, and no other process could ever lead."""
    await make_widget(db, "gina", 1)
    flaky = FlakyBroker(sqllog, failures=1_000_000)
    failing = OutboxRelay(db, flaky, poll_interval=0.01)
    other_process = Database(db.url)
    other = OutboxRelay(other_process, sqllog, poll_interval=0.01)
    tasks = [asyncio.create_task(failing.run())]
    try:
        await eventually(lambda: _attempted(flaky, 1), "the failing relay never tried", 20, every=0.02)
        tasks.append(asyncio.create_task(other.run()))
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 30, every=0.02)
    finally:
        failing.stop()
        other.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await other_process.dispose()


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_the_leading_relays_session_bounds_how_long_the_server_waits_on_a_vanished_host(
    db: Database, sqllog: SqlLogBroker
) -> None:
    """The lead is a session-level lock: a leader whose host died would keep it, and every
    replica's outbox unpublished, until the server's operating system gave up on the connection
    (two hours of silence before its first keepalive probe by default)."""
    relay = OutboxRelay(db, sqllog, poll_interval=0.01)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _listening(relay), "the relay never listened", 20, every=0.02)
        assert await peer_bounds(relay._leader) == VANISHED_PEER_BOUNDS
    finally:
        relay.stop()
        await task


async def _attempted(flaky: FlakyBroker, n: int) -> bool:
    return flaky.attempts >= n


async def test_commits_arriving_within_the_linger_go_out_in_the_same_run(db: Database, sqllog: SqlLogBroker) -> None:
    runs: list[int] = []
    publish = sqllog.publish

    async def counting(messages: Sequence[OutgoingMessage]) -> None:
        runs.append(len(messages))
        await publish(messages)

    sqllog.publish = counting  # type: ignore[method-assign]

    behind: list[int] = []

    async def linger(_: float) -> None:  # another transaction commits while the relay lingers
        while behind:
            await make_widget(db, "erin", behind.pop())

    relay = OutboxRelay(db, sqllog, poll_interval=3600, linger=0.01, sleep=linger)
    task = asyncio.create_task(relay.run())
    try:
        # A first row, published and marked: the relay then waits for the next wake-up (it
        # parks before the marking, which runs beside it, commits).
        await make_widget(db, "erin", 0, relay)
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 10, every=0.02)
        behind.append(2)
        await make_widget(db, "erin", 1, relay)
        await eventually(lambda: _backlog_is(db, 0), "the backlog never emptied", 10, every=0.02)
    finally:
        relay.stop()
        await task
    assert runs == [1, 2]


async def _age(db: Database, seqs: Sequence[int], hours: float) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            outbox.update().where(outbox.c.seq.in_(seqs)).values(published_at=utcnow() - timedelta(hours=hours))
        )


async def _seqs(db: Database) -> list[int]:
    async with db.read() as conn:
        return list((await conn.execute(sa.select(outbox.c.seq).order_by(outbox.c.seq))).scalars().all())


async def test_pruning_stops_at_the_first_row_still_pending_or_published_lately(
    db: Database, sqllog: SqlLogBroker
) -> None:
    """Pruning walks the rows in `seq` order and deletes those before the first one it must
    keep, so a row published lately (here, one an operator has sent again) holds back the old
    ones after it until it is old itself, and a pending row holds back everything after it."""
    for n in range(8):
        await make_widget(db, "gus", n)
    relay = OutboxRelay(db, sqllog, retention=60)
    await relay.publish_pending()
    seqs = await _seqs(db)
    await _age(db, seqs[:2] + seqs[3:], hours=2)  # the third row was published lately
    assert await relay.prune() == 2
    assert await _seqs(db) == seqs[2:]
    await _age(db, seqs[2:3], hours=2)  # now it is old too
    async with db.transaction() as conn:  # and the sixth is to be sent again
        await conn.execute(outbox.update().where(outbox.c.seq == seqs[5]).values(published_at=None))
    assert await relay.prune() == 3
    assert await _seqs(db) == seqs[5:]
    assert await relay.prune() == 0
    await relay.publish_pending()
    await _age(db, seqs[5:6], hours=2)
    assert await relay.prune() == 3
    assert await _seqs(db) == []
