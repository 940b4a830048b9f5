"""Test doubles any test layer may reuse: an in-memory broker with the semantics of Kafka and
the SQL log, and clocks the test moves by hand.

`InMemoryBroker` implements the `Broker` / `BrokerConsumer` ports faithfully enough for the
consumer runner and the outbox relay:
- topics are created explicitly with N partitions; publishing to an unknown topic raises
  `BrokerError`; a key picks its partition through `sqllog.partition_for`, so one key keeps
  its order; offsets are dense per partition, starting at 0;
- consumer groups keep committed offsets (the offset of the next record to read);
- the earliest live member of a group owns every partition; later members get nothing until
  it leaves, then the next one takes over from the committed offsets; a member that does not
  own a partition has its commits ignored (fenced);
- closing a member without committing means its records are delivered again to the next
  member of the group (at least once).
Set `available = False` to simulate an outage: every call then raises `BrokerError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from pizzeria.kit.clock import Clock
from pizzeria.messaging.broker import (
    Broker,
    BrokerConsumer,
    BrokerError,
    OutgoingMessage,
    Record,
    TopicPartition,
    TopicSpec,
)
from pizzeria.messaging.sqllog import partition_for


class FakeClock:
    """A monotonic clock (seconds) that only moves when the test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ManualClock(Clock):
    """Wall time, UTC time and monotonic time that move together, only when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._elapsed = 0.0

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def monotonic(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._elapsed += seconds


class InMemoryBroker(Broker):
    """Topics, partitions, consumer groups and committed offsets, all in memory."""

    name = "memory"

    def __init__(self) -> None:
        self._logs: dict[str, list[list[Record]]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = defaultdict(dict)
        self._members: dict[str, list[InMemoryConsumer]] = defaultdict(list)
        self._arrival = asyncio.Event()
        self.started = False
        self.available = True

    # -- the port ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False
        self._wake()

    async def ping(self) -> None:
        self._check()

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        self._check()
        for spec in topics:
            if spec.partitions < 1:
                raise BrokerError(f"topic {spec.name!r} needs at least one partition")
            self._logs.setdefault(spec.name, [[] for _ in range(spec.partitions)])

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._check()
        unknown = sorted({m.topic for m in messages} - self._logs.keys())
        if unknown:  # nothing is written: the whole batch fails
            raise BrokerError(f"unknown topic(s) {', '.join(map(repr, unknown))}")
        now_ms = int(time.time() * 1000)
        for message in messages:
            partitions = self._logs[message.topic]
            partition = partition_for(message.key, len(partitions))
            log = partitions[partition]
            log.append(
                Record(
                    topic=message.topic,
                    partition=partition,
                    offset=len(log),
                    value=bytes(message.value),
                    key=message.key,
                    headers=dict(message.headers),
                    timestamp_ms=now_ms,
                )
            )
        if messages:
            self._wake()

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> InMemoryConsumer:
        return InMemoryConsumer(self, group, list(topics), client_id=client_id)

    # -- inspection for tests ------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        """Topic name → partition count."""
        return {name: len(parts) for name, parts in self._logs.items()}

    def records(self, topic: str) -> list[Record]:
        """Every record of `topic`, partition by partition, each in offset order."""
        return [r for part in self._topic(topic) for r in part]

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {(topic, p): len(part) for p, part in enumerate(self._topic(topic))}

    def committed(self, group: str) -> dict[TopicPartition, int]:
        return dict(self._committed[group])

    def members(self, group: str) -> list[InMemoryConsumer]:
        return list(self._members[group])

    # -- internals -----------------------------------------------------------------------------

    def _check(self) -> None:
        if not self.started:
            raise BrokerError("broker not started")
        if not self.available:
            raise BrokerError("broker unavailable")

    def _topic(self, topic: str) -> list[list[Record]]:
        if topic not in self._logs:
            raise BrokerError(f"unknown topic {topic!r} (topics are created explicitly)")
        return self._logs[topic]

    def _wake(self) -> None:
        """Wake every fetch waiting for records (or for a change of ownership)."""
        self._arrival.set()
        self._arrival = asyncio.Event()

    def _owner(self, group: str) -> InMemoryConsumer | None:
        members = self._members[group]
        return members[0] if members else None


class InMemoryConsumer(BrokerConsumer):
    """One member of a consumer group on the `InMemoryBroker`."""

    def __init__(self, broker: InMemoryBroker, group: str, topics: list[str], *, client_id: str) -> None:
        self.broker = broker
        self.group = group
        self.topics = topics
        self.client_id = client_id or group
        self._position: dict[TopicPartition, int] | None = None  # set when ownership begins
        self._started = False
        self._closed = False

    async def start(self) -> None:
        self.broker._check()
        if self._started:
            return
        for topic in self.topics:
            self.broker._topic(topic)
        self._started = True
        self.broker._members[self.group].append(self)

    @property
    def owns_partitions(self) -> bool:
        return self._started and not self._closed and self.broker._owner(self.group) is self

    def assignment(self) -> set[TopicPartition]:
        if not self.owns_partitions:
            return set()
        return {(t, p) for t in self.topics for p in range(len(self.broker._topic(t)))}

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            records = self._take(max_records)
            remaining = deadline - loop.time()
            if records or self._closed or remaining <= 0:
                return records
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.broker._arrival.wait(), remaining)

    def _take(self, max_records: int) -> list[Record]:
        self.broker._check()
        owned = sorted(self.assignment())
        if not owned:
            return []
        if self._position is None:
            committed = self.broker._committed[self.group]
            self._position = {tp: committed.get(tp, 0) for tp in owned}
        out: list[Record] = []
        for tp in owned:
            log = self.broker._logs[tp[0]][tp[1]]
            start = self._position.setdefault(tp, self.broker._committed[self.group].get(tp, 0))
            batch = log[start : start + max_records - len(out)]
            out.extend(batch)
            self._position[tp] = start + len(batch)
            if len(out) >= max_records:
                break
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.broker._check()
        owned = self.assignment()
        for tp, offset in offsets.items():
            if tp in owned:  # otherwise fenced: the partition's new owner re-reads
                self.broker._committed[self.group][tp] = offset

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._position = None
        with contextlib.suppress(ValueError):
            self.broker._members[self.group].remove(self)
        self.broker._wake()

    async def lag(self) -> dict[TopicPartition, int]:
        owned = self.assignment()
        return {tp: lag for tp, lag in (await self.group_lag()).items() if tp in owned}

    async def group_lag(self) -> dict[TopicPartition, int]:
        committed = self.broker._committed[self.group]
        return {
            (t, p): len(log) - committed.get((t, p), 0)
            for t in self.topics
            for p, log in enumerate(self.broker._topic(t))
        }
