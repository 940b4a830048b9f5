"""The embedded broker: a durable, partitioned log in SQL (SQLite by default, or PostgreSQL).

It keeps Kafka's semantics so that code and tests behave the same on both:
- a topic has N partitions; a key always maps to the same partition; offsets are dense and
  increase per partition (the partition row is locked while a batch takes its offsets, so
  offsets become visible in commit order and a reader never skips one);
- consumer groups: live members heartbeat; partitions are spread over live members and each is
  held by exactly one member through a lease, so a partition changes hands only after its old
  owner released it or stopped heartbeating;
- committed offsets per group and partition; only the lease holder's commit counts.
Records older than the retention are pruned, as Kafka's retention does.

Time is read from a `Clock` (the system's unless told otherwise), and `background=False` starts
no task of its own (no pruner, no heartbeats): a deterministic simulation then moves the clock
and calls `prune()` and each member's `heartbeat()` itself (tests/chaos/simulation.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import random
import struct
import weakref
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pizzeria.kit.clock import SYSTEM, Clock
from pizzeria.kit.db import Database, is_transient_error, one_of
from pizzeria.kit.ids import new_id
from pizzeria.kit.logging import get_logger
from pizzeria.kit.upsert import upsert
from pizzeria.messaging.broker import (
    Broker,
    BrokerConsumer,
    BrokerError,
    OutgoingMessage,
    Record,
    TopicPartition,
    TopicSpec,
    as_text,
    header_text,
)

log = get_logger(__name__)
metadata = sa.MetaData()

topics_t = sa.Table(
    "log_topics",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("partitions", sa.Integer, nullable=False),
)
partitions_t = sa.Table(
    "log_partitions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False, default=0),
)
records_t = sa.Table(
    "log_records",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
)
members_t = sa.Table(
    "log_members",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("member_id", sa.String(255), primary_key=True),
    sa.Column("topics", sa.Text, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)
leases_t = sa.Table(
    "log_leases",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("member_id", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)
offsets_t = sa.Table(
    "log_offsets",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("committed", sa.BigInteger, nullable=False),
)
sa.Index("ix_log_records_ts", records_t.c.timestamp_ms)

T = TypeVar("T")


class TopicBells:
    """Which topics may have new records, known across processes without asking the database:
    a small memory-mapped file beside the SQLite log (as SQLite's own `-shm` is) holds a
    counter per topic, which a publisher moves on once its records have committed.

    A consumer compares the counters of its topics with those it saw before its last query and
    asks the database again only when one moved. Consumer heartbeats and offset commits write
    to the log too, but move no counter, so an idle or quiet consumer costs a memory read per
    poll instead of a query whenever anyone else wrote anything (which `PRAGMA data_version`,
    the file's change counter, cost before).

    Counters are moved without a lock: two publishers that both read n may both write n + 1,
    but each wrote only after its own records had committed, so whoever sees n + 1 and then
    queries finds both. Topics share a slot when their names hash alike (an extra query, never
    a missed one); a torn read is a spurious change. Anything else that could go stale (a
    file replaced under a running process) is covered by consumers looking anyway every
    `SqlLogBroker.LOOK_ANYWAY_S`."""

    SLOTS = 512
    _SIZE = SLOTS * 8
    _COUNTER = struct.Struct("<Q")

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < self._SIZE:
                os.ftruncate(fd, self._SIZE)  # growing only: a counter already written stays
            self._map = mmap.mmap(fd, self._SIZE)
        finally:
            os.close(fd)

    @classmethod
    def beside(cls, database: str) -> TopicBells:
        """The bells of the log in the SQLite file `database` (every process finds the same)."""
        return cls(f"{os.path.realpath(database)}-topics")

    @classmethod
    def _offset(cls, topic: str) -> int:
        return (zlib.crc32(topic.encode()) % cls.SLOTS) * 8

    def ring(self, topics: Iterable[str]) -> None:
        for topic in topics:
            offset = self._offset(topic)
            (count,) = self._COUNTER.unpack_from(self._map, offset)
            self._COUNTER.pack_into(self._map, offset, (count + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    def read(self, topics: Sequence[str]) -> tuple[int, ...]:
        return tuple(self._COUNTER.unpack_from(self._map, self._offset(t))[0] for t in topics)

    def close(self) -> None:
        self._map.close()


def _record(row: Any) -> Record:
    """A stored row as a Record, whatever its columns hold (another writer may have put
    anything there): what is not as it should be is named in the record's defects."""
    defects: list[str] = []
    key = None if row.key is None else as_text(row.key, "the key", defects)
    headers: dict[str, str] = {}
    try:
        stored = orjson.loads(row.headers)
    except (orjson.JSONDecodeError, TypeError) as exc:
        defects.append(f"the headers are not JSON: {exc}")
        stored = {}
    if not isinstance(stored, dict):
        defects.append(f"the headers are not an object but {type(stored).__name__}")
        stored = {}
    for name, value in stored.items():
        headers[name] = header_text(name, value, defects)
    value = row.value
    if not isinstance(value, bytes):
        value = as_text(value, "the value", defects).encode()
    return Record(
        topic=row.topic,
        partition=row.partition,
        offset=row.offset,
        value=value,
        key=key,
        headers=headers,
        timestamp_ms=row.timestamp_ms,
        defects=tuple(defects),
    )


def partition_for(key: str | None, partitions: int) -> int:
    """Stable key → partition mapping; keyless messages are spread at random."""
    if key is None:
        return random.randrange(partitions)
    return zlib.crc32(key.encode()) % partitions


def _normalize(url: str) -> str:
    parsed = make_url(url)
    driver = {"postgresql": "postgresql+asyncpg"}.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


async def _upsert(conn: Any, table: sa.Table, values: dict[str, Any], keys: list[str]) -> None:
    await conn.execute(upsert(conn, table, keys), values)


# The statements of the hot paths, built once.
_TAKE_OFFSETS = (
    partitions_t.update()
    .where(partitions_t.c.topic == sa.bindparam("t"), partitions_t.c.partition == sa.bindparam("p"))
    .values(next_offset=partitions_t.c.next_offset + sa.bindparam("n"))
    .returning(partitions_t.c.next_offset)
)
_INSERT_RECORDS = records_t.insert()
_ENDS = sa.select(partitions_t).where(one_of(partitions_t.c.topic, "topics"))
_READ = (
    sa.select(records_t)
    .where(
        records_t.c.topic == sa.bindparam("t"),
        records_t.c.partition == sa.bindparam("p"),
        records_t.c.offset >= sa.bindparam("o"),
    )
    .order_by(records_t.c.offset)
    .limit(sa.bindparam("n"))
)
_RENEW = (
    leases_t.update()
    .where(leases_t.c.group_id == sa.bindparam("g"), leases_t.c.member_id == sa.bindparam("m"))
    .values(expires_at=sa.bindparam("e"))
)
_HELD = sa.select(leases_t.c.topic, leases_t.c.partition).where(
    leases_t.c.group_id == sa.bindparam("g"),
    leases_t.c.member_id == sa.bindparam("m"),
    leases_t.c.expires_at > sa.bindparam("now"),
)


@dataclass(slots=True)
class _Waiter:
    topics: Sequence[str]
    until: float  # on the broker's monotonic clock
    woken: asyncio.Future[None]


class SqlLogBroker(Broker):
    """A Kafka-like broker kept in one SQL database shared by every process."""

    name = "sqllog"
    #: A consumer queries at least this often whatever the bells say.
    LOOK_ANYWAY_S = 2.0

    def __init__(
        self,
        url: str,
        *,
        poll_interval_ms: int = 20,
        session_timeout_ms: int = 6000,
        retention_hours: float = 168.0,
        retry_deadline_s: float = 60.0,
        clock: Clock = SYSTEM,
        background: bool = True,
        **_: object,
    ) -> None:
        self.url = _normalize(url)
        self.poll_interval = poll_interval_ms / 1000
        self.session_timeout = session_timeout_ms / 1000
        self.retention_ms = int(retention_hours * 3600 * 1000)
        self.retry_deadline = retry_deadline_s
        self.clock = clock
        self.background = background
        self.db: Database | None = None
        self._partitions: dict[str, int] = {}
        self._pruner: asyncio.Task[None] | None = None
        self._bells: TopicBells | None = None
        # Per consumer (not per id(): a new consumer may get a closed one's id).
        self._rung_seen: weakref.WeakKeyDictionary[object, tuple[tuple[int, ...] | None, float]] = (
            weakref.WeakKeyDictionary()
        )
        # Consumers of this process waiting for news, and the one timer that looks for all of them.
        self._waiting: dict[object, _Waiter] = {}
        self._watcher: asyncio.Task[None] | None = None

    @property
    def database(self) -> Database:
        if self.db is None:
            raise BrokerError("broker not started")
        return self.db

    async def start(self) -> None:
        if self.db is not None:
            return
        self.db = Database(self.url, pool_size=4)
        await self.retrying(self._create_schema)
        path = make_url(self.url).database
        if self.db.dialect == "sqlite" and path and path != ":memory:":
            self._bells = TopicBells.beside(path)
        if self.background:
            self._pruner = asyncio.create_task(self._prune_forever(), name="sqllog-pruner")

    async def _create_schema(self) -> None:
        async with self.database.transaction() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        for looker in list(self._waiting):
            self.stop_waiting(looker)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._pruner:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        if self._bells is not None:
            self._bells.close()
            self._bells = None
        if self.db is not None:
            await self.db.dispose()
            self.db = None

    async def retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`, retrying transient database errors with backoff until the deadline, the
        way a Kafka client reconnects on its own."""
        deadline = self.clock.monotonic() + self.retry_deadline
        delay = 0.01
        while True:
            try:
                return await op()
            except Exception as exc:
                if not is_transient_error(exc):
                    raise
                if self.clock.monotonic() + delay > deadline:
                    raise BrokerError(f"sqllog unavailable: {exc}") from exc
                log.debug("sqllog operation failed; retrying", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def ping(self) -> None:
        await self.database.ping()

    def changed_since_last_look(self, looker: object, topics: Sequence[str]) -> bool:
        """Could there be anything new on `topics` for `looker` since it last looked? On SQLite
        the topics' bells answer (`TopicBells`: a memory read); elsewhere always yes. Also yes
        every `LOOK_ANYWAY_S` regardless, so a missed change is only ever late."""
        if self._bells is None:
            return True
        rung = self._bells.read(topics)
        now = self.clock.monotonic()
        if not self._moved(looker, rung, now):
            return False
        self._rung_seen[looker] = (rung, now)
        return True

    def _moved(self, looker: object, rung: tuple[int, ...], now: float) -> bool:
        """Whether the bells `rung` differ from what `looker` saw at its last look, or it is
        time to look anyway."""
        seen, at = self._rung_seen.get(looker, (None, 0.0))
        return rung != seen or now - at >= self.LOOK_ANYWAY_S

    def look_again(self, looker: object) -> None:
        """`looker` has reason to query at its next look whatever the bells say (it left
        records unread, or took over partitions)."""
        self._rung_seen.pop(looker, None)

    async def wait_for_news(self, looker: object, topics: Sequence[str], timeout: float) -> None:
        """Return once `looker`'s topics may hold something new (`changed_since_last_look`
        would say so), it stops waiting (`stop_waiting`), or `timeout` has passed.

        Every consumer of this process waits on one timer, which looks at the bells of every
        waiting consumer each poll interval and wakes only those whose topics moved: a process
        with several consumer groups wakes as often as one with a single group."""
        if timeout <= 0:
            return
        waiter = _Waiter(topics, self.clock.monotonic() + timeout, asyncio.get_running_loop().create_future())
        self._waiting[looker] = waiter
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="sqllog-bells")
        try:
            await waiter.woken
        finally:
            if self._waiting.get(looker) is waiter:
                del self._waiting[looker]

    def stop_waiting(self, looker: object) -> None:
        """End `looker`'s wait now (it is closing)."""
        waiter = self._waiting.get(looker)
        if waiter is not None and not waiter.woken.done():
            waiter.woken.set_result(None)

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.poll_interval)
            now = self.clock.monotonic()
            for looker, waiter in list(self._waiting.items()):
                if not waiter.woken.done() and (now >= waiter.until or self._news_for(looker, waiter.topics, now)):
                    waiter.woken.set_result(None)

    def _news_for(self, looker: object, topics: Sequence[str], now: float) -> bool:
        """What `changed_since_last_look` would answer, without counting it as a look."""
        return self._bells is None or self._moved(looker, self._bells.read(topics), now)

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        async def op() -> None:
            async with self.database.transaction() as conn:
                existing = set((await conn.execute(sa.select(topics_t.c.name))).scalars())
                for spec in topics:
                    if spec.name in existing:
                        continue
                    await conn.execute(topics_t.insert().values(name=spec.name, partitions=spec.partitions))
                    await conn.execute(
                        partitions_t.insert(),
                        [{"topic": spec.name, "partition": p, "next_offset": 0} for p in range(spec.partitions)],
                    )

        await self.retrying(op)

    async def partitions_of(self, topic: str) -> int:
        if topic not in self._partitions:
            async with self.database.read() as conn:
                rows = (await conn.execute(sa.select(topics_t))).all()
            self._partitions.update({r.name: r.partitions for r in rows})
        if topic not in self._partitions:
            raise BrokerError(f"unknown topic {topic!r} (topics are created explicitly)")
        return self._partitions[topic]

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        counts = {t: await self.retrying(partial(self.partitions_of, t)) for t in {m.topic for m in messages}}
        by_partition: dict[TopicPartition, list[OutgoingMessage]] = defaultdict(list)
        for msg in messages:
            by_partition[(msg.topic, partition_for(msg.key, counts[msg.topic]))].append(msg)
        now_ms = int(self.clock.time() * 1000)

        async def op() -> None:
            async with self.database.transaction() as conn:
                rows: list[dict[str, Any]] = []
                # Lock partitions in a fixed order so concurrent publishers cannot deadlock.
                for (topic, partition), msgs in sorted(by_partition.items()):
                    end = (await conn.execute(_TAKE_OFFSETS, {"t": topic, "p": partition, "n": len(msgs)})).scalar_one()
                    first = end - len(msgs)
                    rows.extend(
                        {
                            "topic": topic,
                            "partition": partition,
                            "offset": first + i,
                            "key": m.key,
                            "value": m.value,
                            "headers": orjson.dumps(dict(m.headers)).decode(),
                            "timestamp_ms": now_ms,
                        }
                        for i, m in enumerate(msgs)
                    )
                await conn.execute(_INSERT_RECORDS, rows)

        await self.retrying(op)
        if self._bells is not None:
            self._bells.ring(counts)

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        return SqlLogConsumer(self, group, list(topics), client_id=client_id)

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(600 * (0.5 + random.random()))
            with contextlib.suppress(Exception):
                await self.prune()

    async def prune(self) -> None:
        """Delete the records older than the retention."""
        cutoff = int(self.clock.time() * 1000) - self.retention_ms
        async with self.database.transaction() as conn:
            await conn.execute(records_t.delete().where(records_t.c.timestamp_ms < cutoff))


class SqlLogConsumer(BrokerConsumer):
    """One member of a consumer group on the SQL log."""

    def __init__(self, broker: SqlLogBroker, group: str, topics: list[str], *, client_id: str) -> None:
        self.broker = broker
        self.group = group
        self.topics = topics
        self.member_id = f"{client_id or 'consumer'}-{new_id()}"
        self._owned: dict[TopicPartition, float] = {}  # partition → local lease expiry
        self._position: dict[TopicPartition, int] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._complete = False  # does this member hold every partition it should?
        self._closed = False

    @property
    def _db(self) -> Database:
        return self.broker.database

    async def start(self) -> None:
        for topic in self.topics:
            await self.broker.retrying(partial(self.broker.partitions_of, topic))
        await self.broker.retrying(self._rebalance)
        if self.broker.background:
            self._heartbeat = asyncio.create_task(self._heartbeat_forever(), name=f"sqllog-hb-{self.group}")

    async def heartbeat(self) -> None:
        """One heartbeat, as the background task beats (for a broker started without it)."""
        await self.broker.retrying(self._rebalance)

    def assignment(self) -> set[TopicPartition]:
        now = self.broker.clock.time()
        return {tp for tp, exp in self._owned.items() if exp > now}

    async def _heartbeat_forever(self) -> None:
        while not self._closed:
            interval = self.broker.session_timeout / 4 if self._complete else 0.2
            await asyncio.sleep(interval)
            try:
                await self._rebalance()
            except Exception as exc:
                # Never let the heartbeat die: keep the old view; if this lasts, the leases
                # run out and the partitions move to members that can still reach the log.
                log.warning("sqllog heartbeat failed", group=self.group, error=repr(exc))

    async def _rebalance(self) -> None:
        """Heartbeat, then release what is no longer ours and take what is (if it is free)."""
        now = self.broker.clock.time()
        ttl = self.broker.session_timeout
        parts = {t: await self.broker.partitions_of(t) for t in self.topics}
        async with self._db.transaction() as conn:
            await _upsert(
                conn,
                members_t,
                {
                    "group_id": self.group,
                    "member_id": self.member_id,
                    "topics": orjson.dumps(self.topics).decode(),
                    "heartbeat_at": now,
                },
                ["group_id", "member_id"],
            )
            await conn.execute(
                members_t.delete().where(members_t.c.group_id == self.group, members_t.c.heartbeat_at < now - ttl)
            )
            live = (
                await conn.execute(
                    sa.select(members_t.c.member_id, members_t.c.topics)
                    .where(members_t.c.group_id == self.group)
                    .order_by(members_t.c.member_id)
                )
            ).all()
            desired = self._assign(live, parts)
            leases = {
                (r.topic, r.partition): r
                for r in (await conn.execute(sa.select(leases_t).where(leases_t.c.group_id == self.group))).all()
            }
            owned: dict[TopicPartition, float] = {}
            for tp, lease in leases.items():
                if lease.member_id == self.member_id and tp not in desired:
                    await conn.execute(
                        leases_t.update()
                        .where(
                            leases_t.c.group_id == self.group,
                            leases_t.c.topic == tp[0],
                            leases_t.c.partition == tp[1],
                            leases_t.c.member_id == self.member_id,
                        )
                        .values(member_id=None, expires_at=0)
                    )
            # What this member holds already (and still should: the rest was released just
            # above) is renewed in one statement; only partitions it takes over are written one
            # by one.
            mine = {tp for tp, lease in leases.items() if lease.member_id == self.member_id and tp in desired}
            if mine:
                await conn.execute(_RENEW, {"g": self.group, "m": self.member_id, "e": now + ttl})
                owned.update(dict.fromkeys(mine, now + ttl))
            for tp in sorted(desired - mine):
                current = leases.get(tp)
                free = current is None or current.member_id is None or current.expires_at < now
                if not free:
                    continue
                await _upsert(
                    conn,
                    leases_t,
                    {
                        "group_id": self.group,
                        "topic": tp[0],
                        "partition": tp[1],
                        "member_id": self.member_id,
                        "expires_at": now + ttl,
                    },
                    ["group_id", "topic", "partition"],
                )
                owned[tp] = now + ttl
            fresh = [tp for tp in owned if tp not in self._owned or self._owned[tp] <= now]
            committed: dict[TopicPartition, int] = {}
            if fresh:
                rows = (await conn.execute(sa.select(offsets_t).where(offsets_t.c.group_id == self.group))).all()
                committed = {(r.topic, r.partition): r.committed for r in rows}
        for tp in fresh:
            self._position[tp] = committed.get(tp, 0)
        if fresh:
            self.broker.look_again(self)  # what is already waiting there rang no bell for us
        for tp in list(self._position):
            if tp not in owned:
                del self._position[tp]
        # Trust the lease a little less long than the database does, so that this member stops
        # reading before anyone else may start.
        self._owned = {tp: exp - ttl * 0.25 for tp, exp in owned.items()}
        self._complete = set(owned) == desired

    def _assign(self, live: Sequence[Any], parts: Mapping[str, int]) -> set[TopicPartition]:
        """Round-robin each topic's partitions over the live members subscribed to it."""
        mine: set[TopicPartition] = set()
        for topic, count in parts.items():
            members = [m.member_id for m in live if topic in orjson.loads(m.topics)]
            if self.member_id not in members:
                members.append(self.member_id)
                members.sort()
            index = members.index(self.member_id)
            mine.update((topic, p) for p in range(count) if p % len(members) == index)
        return mine

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        clock = self.broker.clock
        deadline = clock.monotonic() + timeout
        while True:
            if self.broker.changed_since_last_look(self, self.topics):
                records = await self.broker.retrying(lambda: self._fetch_once(max_records))
                if records:
                    self.broker.look_again(self)  # a partition may hold more than was taken
                    return records
            if self._closed or clock.monotonic() >= deadline:
                return []
            await self.broker.wait_for_news(self, self.topics, deadline - clock.monotonic())

    async def _fetch_once(self, max_records: int) -> list[Record]:
        owned = sorted(self.assignment())
        if not owned:
            return []
        start = {tp: self._position.get(tp, 0) for tp in owned}
        advanced: dict[TopicPartition, int] = {}
        out: list[Record] = []
        async with self._db.read() as conn:
            ends = {
                (r.topic, r.partition): r.next_offset
                for r in (await conn.execute(_ENDS, {"topics": self.topics})).all()
            }
            ready = [tp for tp in owned if start[tp] < ends.get(tp, 0)]
            if not ready:
                return []
            share = max(1, max_records // len(ready))
            for tp in ready:
                rows = (await conn.execute(_READ, {"t": tp[0], "p": tp[1], "o": start[tp], "n": share})).all()
                out.extend(_record(r) for r in rows)
                if rows:
                    advanced[tp] = rows[-1].offset + 1
        # Only now that every read succeeded does the position move (a failed read must not
        # skip the records an earlier query of the same fetch returned), and only where no
        # rebalance reset it meanwhile.
        for tp, position in advanced.items():
            if self._position.get(tp) == start[tp]:
                self._position[tp] = position
            else:
                out = [r for r in out if (r.topic, r.partition) != tp]
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return

        async def op() -> None:
            now = self.broker.clock.time()
            async with self._db.transaction() as conn:
                held = {
                    (r.topic, r.partition)
                    for r in (await conn.execute(_HELD, {"g": self.group, "m": self.member_id, "now": now})).all()
                }
                for (topic, partition), offset in offsets.items():
                    if (topic, partition) not in held:
                        continue  # fenced: the partition moved on; its new owner re-reads
                    await _upsert(
                        conn,
                        offsets_t,
                        {
                            "group_id": self.group,
                            "topic": topic,
                            "partition": partition,
                            "committed": offset,
                        },
                        ["group_id", "topic", "partition"],
                    )

        await self.broker.retrying(op)

    async def lag(self) -> dict[TopicPartition, int]:
        owned = self.assignment()
        return {tp: lag for tp, lag in (await self.group_lag()).items() if tp in owned}

    async def group_lag(self) -> dict[TopicPartition, int]:
        async with self._db.read() as conn:
            ends = {
                (r.topic, r.partition): r.next_offset
                for r in (
                    await conn.execute(sa.select(partitions_t).where(partitions_t.c.topic.in_(self.topics)))
                ).all()
            }
            done = {
                (r.topic, r.partition): r.committed
                for r in (await conn.execute(sa.select(offsets_t).where(offsets_t.c.group_id == self.group))).all()
            }
        return {tp: end - done.get(tp, 0) for tp, end in ends.items()}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.broker.stop_waiting(self)
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(Exception):
            async with self._db.transaction() as conn:
                await conn.execute(
                    leases_t.update()
                    .where(leases_t.c.group_id == self.group, leases_t.c.member_id == self.member_id)
                    .values(member_id=None, expires_at=0)
                )
                await conn.execute(
                    members_t.delete().where(
                        members_t.c.group_id == self.group, members_t.c.member_id == self.member_id
                    )
                )
        self._owned.clear()
        self._position.clear()
