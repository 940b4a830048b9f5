"""The outbox relay: moves committed outbox rows to the broker, oldest first, and marks them.

- Woken by the committing unit of work in this process, and on PostgreSQL by LISTEN/NOTIFY from
  any process; a slow poll is only the fallback.
- Publishes in batches in `seq` order and waits for every acknowledgement before marking the
  batch published, so a crash re-sends (at least once) and never skips a row. Rows of one
  aggregate were committed in order under the aggregate's row lock, so `seq` order keeps
  per-aggregate order.
- One relay per database publishes at a time: on PostgreSQL the relay holding a session
  advisory lock is the leader, so replicas of a service never interleave batches.
- Marking a batch published overlaps with publishing the next one (the rows being marked are
  kept out of the next batch), so commit → broker latency is one select and one publish.
- Published rows are pruned after the retention period.
- Every replica, leading or not, reads the backlog gauges from the database every
  `_GAUGES_EVERY_S`: they describe the database, so no replica reports a stale figure when
  another one leads or while publishing fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from pizzeria.kit import failpoints
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.db import Database, end_session, notice_vanished_peer, one_of
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import wait_for_event
from pizzeria.kit.statements import execute, fetch_rows
from pizzeria.messaging import metrics
from pizzeria.messaging.broker import Broker, OutgoingMessage
from pizzeria.messaging.tables import outbox
from pizzeria.messaging.uow import OUTBOX_CHANNEL

log = get_logger(__name__)
_ADVISORY_KEY = 0x70697A7A  # one relay per database publishes at a time
_PRUNE_EVERY_S = 60.0
_GAUGES_EVERY_S = 15.0
_PENDING = (
    sa.select(
        outbox.c.seq, outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.headers, outbox.c.payload, outbox.c.created_at
    )
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.seq)
    .limit(sa.bindparam("n"))
)
_MARK = outbox.update().where(one_of(outbox.c.seq, "seqs")).values(published_at=sa.bindparam("at"))
_FIRST_KEPT = (
    sa.select(outbox.c.seq)
    .where(sa.or_(outbox.c.published_at.is_(None), outbox.c.published_at >= sa.bindparam("cutoff")))
    .order_by(outbox.c.seq)
    .limit(1)
    .scalar_subquery()
)
_PRUNE = outbox.delete().where(
    outbox.c.seq < sa.func.coalesce(_FIRST_KEPT, 2**63 - 1),  # no row kept: every row before the end
    # Already true of every row before the first kept one; asked again of a row an operator
    # marks pending while this runs (PostgreSQL checks a row changed meanwhile against it).
    outbox.c.published_at < sa.bindparam("cutoff"),
)


def outgoing(rows: Sequence[Any]) -> list[OutgoingMessage]:
    """The records of outbox rows, as the broker publishes them."""
    loads = orjson.loads
    return [OutgoingMessage(r.topic, r.payload, r.key, loads(r.headers)) for r in rows]  # (topic, value, key, headers)


class OutboxRelay:
    """Publishes a service's outbox to the broker."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention: float = 3600.0,
        linger: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.broker = broker
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.linger = linger
        self._linger_sleep = sleep
        self.retention = retention
        self._wake = asyncio.Event()
        self._stopped = False
        self._last_prune = 0.0
        self._last_gauges = 0.0
        self._leader: Any = None  # PostgreSQL: the connection holding the lock and LISTENing
        self._leader_driver: Any = None
        self._marking: set[int] = set()
        self._mark_task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows."""
        self._wake.set()

    def leading(self) -> bool:
        """Whether this relay publishes for its database (on PostgreSQL: holds the lock on a
        live session). A commit of this process that finds it leading wakes it directly and
        tells no other process: should it lose the lead before it publishes, the relay that
        takes the lead next publishes every row waiting, starting with its first cycle."""
        return self._leader is not None and not self._leader_driver.is_closed()

    async def run(self) -> None:
        """Publish forever; survives broker and database outages by backing off."""
        backoff = 0.05
        try:
            while not self._stopped:
                await self._gauges_due()
                try:
                    if not await self._lead():
                        await self._sleep(self.poll_interval)
                        continue
                    sent = await self._cycle()
                    backoff = 0.05
                    if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
                        await self.prune()
                    if sent >= self.batch_size:
                        continue  # more waiting: do not sleep
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    metrics.outbox_publish_failures.inc()
                    log.warning("outbox relay batch failed; will retry", error=str(exc), backoff_s=backoff)
                    await self._resign()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                await self._sleep(self.poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await self._settle_marks()
            await self._resign()

    async def _sleep(self, seconds: float) -> None:
        if await wait_for_event(self._wake, seconds) and self.linger:
            # woken by a commit: let the commits right behind it join the run
            await self._linger_sleep(self.linger)
        self._wake.clear()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch and mark it, start to finish; returns how many went out."""
        sent = await self._cycle()
        await self._settle_marks()
        return sent

    async def _cycle(self) -> int:
        """Select the oldest unpublished rows, publish them, and start marking them."""
        async with self.db.read() as conn:
            rows = await self._select_batch(conn)
        if not rows:
            return 0
        await self._publish(rows)
        await self._settle_marks()  # at most one marking in flight
        seqs = [r.seq for r in rows]
        self._marking.update(seqs)
        self._mark_task = asyncio.create_task(self._mark(seqs), name="outbox-mark")
        return len(rows)

    async def _settle_marks(self) -> None:
        task, self._mark_task = self._mark_task, None
        if task is not None:
            await task

    async def _select_batch(self, conn: Any) -> list[Any]:
        # Taken before the query: a marking that finishes while the query runs may or may not
        # be visible to it, but its rows are in this snapshot either way, so never re-sent.
        marking = set(self._marking)
        found = await fetch_rows(conn, _PENDING, {"n": self.batch_size + len(marking)})
        rows = [r for r in found if r.seq not in marking]
        return rows[: self.batch_size]

    async def _publish(self, rows: list[Any]) -> None:
        failpoints.hit("relay.before_publish")
        await self.broker.publish(outgoing(rows))
        acked = utcnow()
        for r in rows:
            metrics.outbox_publish_latency.observe(max(0.0, (acked - as_utc(r.created_at)).total_seconds()))
        metrics.outbox_published.inc(len(rows))
        metrics.outbox_batches.inc()
        failpoints.hit("relay.after_publish")

    async def _mark(self, seqs: list[int]) -> None:
        try:
            async with self.db.transaction() as conn:
                await execute(conn, _MARK, {"seqs": seqs, "at": utcnow()})
        except Exception as exc:
            # Published but not marked: they go out again (at least once), never lost.
            log.warning("cannot mark outbox rows published; they will be sent again", error=str(exc))
        finally:
            self._marking.difference_update(seqs)

    async def prune(self) -> int:
        """Delete rows published longer ago than the retention: every row before the first, in
        `seq` order, that is pending or was published since (rows are published in `seq` order,
        so that one is found by reading the key from its start, through the rows deleted). A row
        published within the retention, or pending, holds back the rows after it until it is
        old enough itself: nothing is deleted that an operator could still send again."""
        self._last_prune = time.monotonic()
        async with self.db.transaction() as conn:
            result = await conn.execute(_PRUNE, {"cutoff": utcnow() - timedelta(seconds=self.retention)})
        return result.rowcount or 0

    async def backlog(self) -> tuple[int, float]:
        """Unpublished rows and the age in seconds of the oldest one."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None))
                )
            ).one()
        count, oldest = int(row[0]), row[1]
        age = (utcnow() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        return count, max(0.0, age)

    async def refresh_gauges(self) -> None:
        self._last_gauges = time.monotonic()
        count, age = await self.backlog()
        metrics.outbox_backlog.set(count)
        metrics.outbox_oldest_age.set(age)

    async def _gauges_due(self) -> None:
        if time.monotonic() - self._last_gauges < _GAUGES_EVERY_S:
            return
        try:
            await self.refresh_gauges()
        except Exception as exc:  # the database is down: the gauges keep their last values
            log.debug("cannot read the outbox backlog", error=str(exc))

    async def _lead(self) -> bool:
        """On PostgreSQL, be (or become) the one relay of this database that publishes; its
        connection also LISTENs for commits from any process. Elsewhere, always lead."""
        if not self.db.is_postgres:
            metrics.outbox_relay_leading.set(1)
            return True
        if self._leader is not None:
            if not self._leader_driver.is_closed():
                return True
            await self._resign()  # the session died, and the lock with it: compete again
        conn = await self.db.writer.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (await conn.execute(sa.select(sa.func.pg_try_advisory_lock(_ADVISORY_KEY)))).scalar_one()
            if not got:
                await conn.close()
                return False
            await notice_vanished_peer(conn)
            raw = await conn.get_raw_connection()
            assert raw.driver_connection is not None
            await raw.driver_connection.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            raw.driver_connection.add_termination_listener(lambda *_: self._wake.set())
        except BaseException:
            await end_session(conn)  # it may hold the lock already
            raise
        self._leader, self._leader_driver = conn, raw.driver_connection
        metrics.outbox_relay_leading.set(1)
        log.info("this outbox relay now publishes for its database")
        return True

    async def _resign(self) -> None:
        conn, self._leader = self._leader, None
        if conn is not None:
            metrics.outbox_relay_leading.set(0)
            await end_session(conn)  # and with it the lock
