"""The broker port: what the rest of the system needs from Kafka or the embedded SQL log.

Semantics are Kafka's: topics split into partitions, a message's key picks its partition so
one key keeps its order, consumer groups share partitions and commit offsets. Delivery is at
least once; the inbox makes effects exactly once.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pizzeria.kit.frozen import quick_init


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: name, partitions and (Kafka only) replication settings."""

    name: str
    partitions: int = 3
    replication_factor: int = 1
    min_insync_replicas: int = 1


@quick_init
@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to publish. `key` picks the partition; headers are text."""

    topic: str
    value: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class Record:
    """A message as consumed, with its place in the log.

    Adapters never fail on what a record holds: a key or header that is not text is given as
    readable text (bytes that are not UTF-8 as `\\xNN` escapes) and named in `defects`, and
    a record with defects can only be dead-lettered."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: str | None
    headers: Mapping[str, str]
    timestamp_ms: int
    defects: tuple[str, ...] = ()


def as_text(raw: object, what: str, defects: list[str]) -> str:
    """`raw` (bytes, text or anything a log holds) as text; what was wrong with it noted in
    `defects`. Never raises."""
    if isinstance(raw, str):
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: not text any store or broker takes
            defects.append(f"{what} is not valid Unicode text")
            return raw.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            defects.append(f"{what} is not UTF-8")
            return data.decode("utf-8", "backslashreplace")
    defects.append(f"{what} is not text but {type(raw).__name__}")
    return repr(raw)[:200]


def header_text(name: str, raw: object, defects: list[str]) -> str:
    """A header's value as text, as `as_text` makes it, with the header named in any defect.
    ASCII (every header this system writes) is taken as it is, without the checks and the
    description a defect would need."""
    if type(raw) is str and raw.isascii():
        return raw
    if type(raw) is bytes and raw.isascii():
        return raw.decode("ascii")
    return as_text(raw, f"the header {name[:64]!r}", defects)


TopicPartition = tuple[str, int]


class BrokerError(RuntimeError):
    """The broker could not do what was asked (unreachable, unknown topic, not acknowledged)."""


class BrokerConsumer(abc.ABC):
    """A member of a consumer group. Use from one task at a time."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to `max_records` records from the assigned partitions, waiting up to `timeout`
        seconds for the first; in partition order per partition."""

    async def fetch_run(self, max_records: int, timeout: float, linger: float) -> list[Record]:
        """A run of records: `fetch`, and once the first record is there, with a `linger`,
        what else arrives within it (up to `max_records` in all)."""
        records = list(await self.fetch(max_records, timeout))
        if records and linger and len(records) < max_records:
            await asyncio.sleep(linger)
            records += await self.fetch(max_records - len(records), 0)
        return records

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the offset of the next record to read. A member that lost the
        partition in a rebalance has its commit ignored; the new owner re-reads from the last
        committed offset (at-least-once)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the group; uncommitted records will be delivered again."""

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member currently owns (best effort, for metrics and tests)."""
        return set()

    async def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each owned partition (for the consumer-lag gauge)."""
        return {}

    @abc.abstractmethod
    async def group_lag(self) -> dict[TopicPartition, int]:
        """Records between the end of every partition of the subscribed topics and the group's
        committed offset, whichever member owns it: how far the group as a whole is behind
        (its members may be replicas in other processes)."""


class Broker(abc.ABC):
    """A connection to the broker: topic admin, publishing, and consumer factory."""

    name: str = "broker"

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Create topics that do not exist yet; existing ones are left as they are."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish and wait until every message is durably acknowledged; raises BrokerError
        otherwise (some may still have been written: publishing is at least once)."""

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        """A new, not yet started, member of `group` subscribed to `topics`."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""
