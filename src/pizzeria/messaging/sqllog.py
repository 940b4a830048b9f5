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
import ctypes
import functools
import mmap
import os
import random
import struct
import sys
import weakref
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from pizzeria.kit.clock import SYSTEM, Clock
from pizzeria.kit.db import Database, hold_lock, is_transient_error
from pizzeria.kit.ids import new_id
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import wait_for_event
from pizzeria.kit.statements import fetch_rows, scalar_one
from pizzeria.kit.upsert import insert_rows, update_rows, upsert
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
    `SqlLogBroker.LOOK_ANYWAY_S`.

    Each slot also has a doorbell: a one-byte file in the directory `<bells>.d`, written once
    its counter has moved. A process whose consumers wait watches the doorbells of their slots
    (`Doorbells`, inotify) and so learns of news when it comes, instead of reading the counters
    on a timer."""

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
        self.doors = f"{path}.d"
        with contextlib.suppress(OSError):  # without it, no doorbell rings (see `_ring_door`)
            os.makedirs(self.doors, exist_ok=True)
        self._doors: dict[int, int] = {}  # slot → the open doorbell file
        self._door_failed = False

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
            # After the counter: whoever the doorbell wakes finds the counter moved.
            self._ring_door(offset)

    def _ring_door(self, offset: int) -> None:
        """Best effort: the records are committed by now (failing here would have them sent
        again), and a doorbell that cannot be written (another user's file, no file handles
        left) only leaves its watchers to read the counters, as they do every
        `SqlLogBroker.LOOK_ANYWAY_S` anyway."""
        try:
            door = self._doors.get(offset)
            if door is None:
                door = self._doors[offset] = os.open(self.door(offset), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.pwrite(door, b"\x01", 0)
        except OSError as exc:
            if not self._door_failed:
                self._door_failed = True
                log.warning("cannot ring a doorbell of the log: its consumers learn of news later", error=str(exc))

    def door(self, slot: int) -> str:
        """The doorbell file of `slot` (as `slots` names it)."""
        return os.path.join(self.doors, str(slot // 8))

    @classmethod
    def slots(cls, topics: Sequence[str]) -> tuple[int, ...]:
        """Where the bells of `topics` are (for `read_slots`: worked out once per waiter)."""
        return tuple(cls._offset(t) for t in topics)

    def read(self, topics: Sequence[str]) -> tuple[int, ...]:
        return self.read_slots(self.slots(topics))

    def read_slots(self, slots: Sequence[int]) -> tuple[int, ...]:
        unpack, at = self._COUNTER.unpack_from, self._map
        return tuple(unpack(at, slot)[0] for slot in slots)

    def close(self) -> None:
        for door in self._doors.values():
            os.close(door)
        self._doors.clear()
        self._map.close()


_IN_MODIFY = 0x00000002


class Doorbells:
    """Linux's inotify on the doorbells of `TopicBells`: `rung` returns once a watched slot's
    doorbell was written (or its timeout passed), so a process waiting for news wakes when news
    comes, not fifty times a second to look for it. `open` answers None where inotify is not to
    be had (another system, or the user's inotify instances used up): the broker then reads the
    bells on a timer as before."""

    def __init__(self, fd: int, libc: Any) -> None:
        self._fd = fd
        self._libc = libc
        self._armed: set[int] = set()
        self._rang = asyncio.Event()
        asyncio.get_running_loop().add_reader(fd, self._drain)

    @classmethod
    def open(cls) -> Doorbells | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            log.warning("no inotify: the log's bells are read on a timer", error=os.strerror(ctypes.get_errno()))
            return None
        return cls(fd, libc)

    def arm(self, bells: TopicBells, slots: Iterable[int]) -> bool:
        """Watch the doorbells of `slots` (from now on: call before reading their counters).
        False if one cannot be watched (then nothing tells of its news but a timer)."""
        for slot in slots:
            if slot in self._armed:
                continue
            path = bells.door(slot)
            try:  # (made if need be: a watch needs the file)
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError:
                return False
            if self._libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY) < 0:
                return False
            self._armed.add(slot)
        return True

    def poke(self) -> None:
        """End the current `rung` now (a waiter came or must look at once)."""
        self._rang.set()

    async def rung(self, timeout: float) -> None:
        await wait_for_event(self._rang, timeout)
        self._rang.clear()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 65536):
                pass
        self._rang.set()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)


def _record(topic: str, partition: int, offset: int, key: Any, value: Any, headers: Any, timestamp_ms: int) -> Record:
    """A stored row (its columns in the table's order) as a Record, whatever its columns hold
    (another writer may have put anything there): what is not as it should be is named in the
    record's defects."""
    defects: list[str] = []
    if key is not None:
        key = as_text(key, "the key", defects)
    try:
        stored = orjson.loads(headers)
    except (orjson.JSONDecodeError, TypeError) as exc:
        defects.append(f"the headers are not JSON: {exc}")
        stored = {}
    if not isinstance(stored, dict):
        defects.append(f"the headers are not an object but {type(stored).__name__}")
        stored = {}
    # Text from JSON is always valid Unicode (orjson refuses lone surrogates), so headers that
    # are all text (what every publisher here writes) are taken as they are; anything else is
    # made text, its defects named.
    for header in stored.values():
        if type(header) is not str:
            stored = {name: header_text(name, header, defects) for name, header in stored.items()}
            break
    if type(value) is not bytes:
        value = as_text(value, "the value", defects).encode()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        value=value,
        key=key,
        headers=stored,
        timestamp_ms=timestamp_ms,
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


@functools.cache
def _ends(topics: int) -> sa.Select[Any]:
    """The next offset of every partition of `topics` topics (named `t0`, `t1`, …)."""
    return sa.select(partitions_t.c.topic, partitions_t.c.partition, partitions_t.c.next_offset).where(
        partitions_t.c.topic.in_([sa.bindparam(f"t{i}") for i in range(topics)])
    )


def _from(i: int) -> sa.Select[Any]:
    """Up to `n{i}` records of partition (`t{i}`, `p{i}`) from offset `o{i}` on, in order."""
    return (
        sa.select(records_t)
        .where(
            records_t.c.topic == sa.bindparam(f"t{i}"),
            records_t.c.partition == sa.bindparam(f"p{i}"),
            records_t.c.offset >= sa.bindparam(f"o{i}"),
        )
        .order_by(records_t.c.offset)
        .limit(sa.bindparam(f"n{i}"))
    )


#: The most partitions one fetch statement reads (see `_fetch_once`).
_PARTITIONS_PER_READ = 100


@functools.cache
def _read(partitions: int) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """What a fetch reads from `partitions` partitions, in one statement: each one's records
    (`_from`), ordered by partition and offset."""
    if partitions == 1:
        return _from(0)
    runs = [sa.select(_from(i).subquery()) for i in range(partitions)]
    return sa.union_all(*runs).order_by(sa.column("topic"), sa.column("partition"), sa.column("offset"))


@functools.cache
def _commit_offsets(dialect: str) -> sa.Insert:
    """A group member's committed offset of a partition, stored only while the member holds the
    partition's lease (one statement: the lease is checked by the write itself)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    held = sa.select(
        leases_t.c.group_id, leases_t.c.topic, leases_t.c.partition, sa.bindparam("c", type_=sa.BigInteger)
    ).where(
        leases_t.c.group_id == sa.bindparam("g"),
        leases_t.c.topic == sa.bindparam("t"),
        leases_t.c.partition == sa.bindparam("p"),
        leases_t.c.member_id == sa.bindparam("m"),
        leases_t.c.expires_at > sa.bindparam("now"),
    )
    stmt = insert(offsets_t).from_select(["group_id", "topic", "partition", "committed"], held)
    return stmt.on_conflict_do_update(
        index_elements=["group_id", "topic", "partition"], set_={"committed": stmt.excluded.committed}
    )


_MEMBERS = (
    sa.select(members_t.c.member_id, members_t.c.topics, members_t.c.heartbeat_at)
    .where(members_t.c.group_id == sa.bindparam("g"))
    .order_by(members_t.c.member_id)
)
_EXPIRE_MEMBERS = members_t.delete().where(
    members_t.c.group_id == sa.bindparam("g"), members_t.c.heartbeat_at < sa.bindparam("before")
)
_LEASES = sa.select(leases_t.c.topic, leases_t.c.partition, leases_t.c.member_id, leases_t.c.expires_at).where(
    leases_t.c.group_id == sa.bindparam("g")
)
_RELEASE = (
    leases_t.update()
    .where(
        leases_t.c.group_id == sa.bindparam("g"),
        leases_t.c.topic == sa.bindparam("t"),
        leases_t.c.partition == sa.bindparam("p"),
        leases_t.c.member_id == sa.bindparam("m"),
    )
    .values(member_id=None, expires_at=0)
)
_COMMITTED = sa.select(offsets_t.c.topic, offsets_t.c.partition, offsets_t.c.committed).where(
    offsets_t.c.group_id == sa.bindparam("g")
)
_RENEW = (
    leases_t.update()
    .where(leases_t.c.group_id == sa.bindparam("g"), leases_t.c.member_id == sa.bindparam("m"))
    .values(expires_at=sa.bindparam("e"))
)


@dataclass(slots=True)
class _Waiter:
    """A consumer waiting for news, as the timer that looks for it needs it."""

    slots: tuple[int, ...]  # where its topics' bells are
    seen: tuple[int, ...] | None  # the bells at its last look (None: it is to look again)
    until: float  # its timeout, or its time to look anyway, on the broker's monotonic clock
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
        doorbells: bool = True,
        **_: object,
    ) -> None:
        self.url = _normalize(url)
        self.poll_interval = poll_interval_ms / 1000
        self.use_doorbells = doorbells
        self.session_timeout = session_timeout_ms / 1000
        self.retention_ms = int(retention_hours * 3600 * 1000)
        self.retry_deadline = retry_deadline_s
        self.clock = clock
        self.background = background
        self.db: Database | None = None
        self._partitions: dict[str, int] = {}
        self._pruner: asyncio.Task[None] | None = None
        self._bells: TopicBells | None = None
        self._doorbells: Doorbells | None = None
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
            if self.use_doorbells and self.background:
                # (Waits for a doorbell run on the event loop's time: a broker on a clock of its
                # own — a simulation's, without background tasks — reads the bells on its timer.)
                self._doorbells = Doorbells.open()
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
        if self._doorbells is not None:
            self._doorbells.close()
            self._doorbells = None
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
        waiter = self._waiting.get(looker)
        if waiter is not None:
            waiter.seen = None
            if self._doorbells is not None:
                self._doorbells.poke()

    async def wait_for_news(self, looker: object, topics: Sequence[str], timeout: float) -> None:
        """Return once `looker`'s topics may hold something new (`changed_since_last_look`
        would say so), it stops waiting (`stop_waiting`), or `timeout` has passed.

        Every consumer of this process waits on one watcher, which looks at the bells of every
        waiting consumer and wakes only those whose topics moved: a process with several
        consumer groups wakes as often as one with a single group. The watcher looks when a
        doorbell of a waiting consumer's topics rings (`Doorbells`) or a wait runs out; without
        doorbells, every poll interval."""
        if timeout <= 0:
            return
        now = self.clock.monotonic()
        seen, at = self._rung_seen.get(looker, (None, 0.0))
        slots = TopicBells.slots(topics) if self._bells is not None else ()
        if self._doorbells is not None and self._bells is not None and not self._doorbells.arm(self._bells, slots):
            log.warning("cannot watch the log's doorbells: its bells are read on a timer")
            self._doorbells.poke()  # the watcher may be waiting on them: it goes on with the timer
            self._doorbells.close()
            self._doorbells = None
        waiter = _Waiter(
            slots,
            seen if self._bells is not None else None,
            min(now + timeout, at + self.LOOK_ANYWAY_S),
            asyncio.get_running_loop().create_future(),
        )
        self._waiting[looker] = waiter
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="sqllog-bells")
        elif self._doorbells is not None:
            self._doorbells.poke()  # the watcher may be waiting past this waiter's time
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
        # With doorbells, a first look at once: what rang before a waiter's doorbells were
        # watched moved their counters before that, and this look finds it. Then a look when a
        # doorbell rings or a wait ends, but never sooner than a poll interval after the last
        # one: under load the looks (and the fetches they lead to) gather what rang meanwhile, as
        # the timer's did, while a record that comes after a quiet spell is found at once.
        first = self._doorbells is not None
        looked = 0.0
        while self._waiting:
            doorbells = self._doorbells
            if first:
                first = False
            elif doorbells is None:
                await asyncio.sleep(self.poll_interval)
            else:
                # (A waiter already woken leaves `_waiting` as soon as its task runs.)
                ends = [w.until for w in self._waiting.values() if not w.woken.done()]
                await doorbells.rung(max(0.0, min(ends) - self.clock.monotonic()) if ends else self.poll_interval)
                soonest = looked + self.poll_interval - self.clock.monotonic()
                if soonest > 0:
                    await asyncio.sleep(soonest)
            now = looked = self.clock.monotonic()
            for waiter in list(self._waiting.values()):
                if not waiter.woken.done() and self._news_for(waiter, now):
                    waiter.woken.set_result(None)

    def _news_for(self, waiter: _Waiter, now: float) -> bool:
        """What `changed_since_last_look` would answer `waiter`'s consumer, without counting
        it as a look (or its wait is over)."""
        if now >= waiter.until or waiter.seen is None or self._bells is None:
            return True
        return self._bells.read_slots(waiter.slots) != waiter.seen

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
                    end = scalar_one(
                        await fetch_rows(conn, _TAKE_OFFSETS, {"t": topic, "p": partition, "n": len(msgs)})
                    )
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
                await insert_rows(conn, records_t, rows)

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
        self._topic_names = {f"t{i}": topic for i, topic in enumerate(topics)}
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
            # One member of the group at a time (on PostgreSQL; SQLite's writers are already):
            # two joining at once would each see only itself and take every partition.
            await hold_lock(conn, f"sqllog group {self.group}")
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
            # The group's members, those whose heartbeats stopped deleted (when there are any).
            members = (await conn.execute(_MEMBERS, {"g": self.group})).all()
            live = [m for m in members if m.heartbeat_at >= now - ttl]
            if len(live) < len(members):
                await conn.execute(_EXPIRE_MEMBERS, {"g": self.group, "before": now - ttl})
            desired = self._assign(live, parts)
            leases = {(r.topic, r.partition): r for r in (await conn.execute(_LEASES, {"g": self.group})).all()}
            owned: dict[TopicPartition, float] = {}
            for tp, lease in leases.items():
                if lease.member_id == self.member_id and tp not in desired:
                    await conn.execute(_RELEASE, {"g": self.group, "t": tp[0], "p": tp[1], "m": self.member_id})
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
                committed = {(t, p): c for t, p, c in await conn.execute(_COMMITTED, {"g": self.group})}
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
        # Two statements, no snapshot around them: a partition's records up to its end were
        # committed with (or before) the end was, so they are there when the second one reads.
        async with self._db.read(snapshot=False) as conn:
            ends = {(t, p): end for t, p, end in await fetch_rows(conn, _ends(len(self.topics)), self._topic_names)}
            ready = [tp for tp in owned if start[tp] < ends.get(tp, 0)]
            if not ready:
                return []
            share = max(1, max_records // len(ready))
            rows: list[Any] = []
            # SQLite takes at most 500 terms in a compound SELECT: a member holding more ready
            # partitions than a statement may name reads them in several.
            for first in range(0, len(ready), _PARTITIONS_PER_READ):
                chunk = ready[first : first + _PARTITIONS_PER_READ]
                wanted: dict[str, Any] = {}
                for i, (topic, partition) in enumerate(chunk):
                    wanted.update(
                        {f"t{i}": topic, f"p{i}": partition, f"o{i}": start[(topic, partition)], f"n{i}": share}
                    )
                rows += await fetch_rows(conn, _read(len(chunk)), wanted)
        for row in rows:
            out.append(record := _record(*row))
            advanced[(record.topic, record.partition)] = record.offset + 1
        # Only now that the read succeeded does the position move, and only where no rebalance
        # reset it meanwhile.
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
            values = [
                {"g": self.group, "m": self.member_id, "now": now, "t": topic, "p": partition, "c": offset}
                for (topic, partition), offset in offsets.items()
            ]
            async with self._db.transaction() as conn:
                # Only where this member holds the lease: elsewhere the partition moved on, and
                # its new owner re-reads from the offset committed before.
                await update_rows(conn, _commit_offsets(conn.dialect.name), values)

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
