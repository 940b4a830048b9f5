"""A broker connection that can be paused on purpose (the fault lab's "broker paused").

While paused, publishing fails as it does when the broker cannot be reached (so the outbox
relay backs off and the outbox backs up), and consumers are handed nothing (so consumer groups
wait where they are). Topic admin and `ping` still reach the broker: the pause stands for an
outage of the message flow, and a service's readiness stays what it is. On resuming, the relay's
next attempt publishes the backlog and the consumers read on from their committed offsets.

On Kafka a consumer paused for longer than `max.poll.interval.ms` (five minutes by default)
leaves its group and joins again on resuming.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from pizzeria.messaging.broker import (
    Broker,
    BrokerConsumer,
    BrokerError,
    OutgoingMessage,
    Record,
    TopicPartition,
    TopicSpec,
)


class BrokerPaused(BrokerError):
    """Publishing was refused: the broker is paused."""


class PausableBroker(Broker):
    """`broker`, with a switch that pauses the flow of messages through it."""

    def __init__(self, broker: Broker) -> None:
        self.inner = broker
        self.name = broker.name
        self.paused = False

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        await self.inner.create_topics(topics)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.paused:
            raise BrokerPaused("the broker is paused (fault lab): nothing is published")
        await self.inner.publish(messages)

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        return _PausableConsumer(self, self.inner.consumer(group, topics, client_id=client_id))

    async def ping(self) -> None:
        await self.inner.ping()


class _PausableConsumer(BrokerConsumer):
    def __init__(self, broker: PausableBroker, inner: BrokerConsumer) -> None:
        self.broker = broker
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        if self.broker.paused:
            await asyncio.sleep(timeout)  # as a broker with nothing to deliver answers
            return []
        return await self.inner.fetch(max_records, timeout)

    async def fetch_run(self, max_records: int, timeout: float, linger: float) -> list[Record]:
        if self.broker.paused:
            await asyncio.sleep(timeout)
            return []
        return await self.inner.fetch_run(max_records, timeout, linger)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self.inner.commit(offsets)

    async def close(self) -> None:
        await self.inner.close()

    def assignment(self) -> set[TopicPartition]:
        return self.inner.assignment()

    async def lag(self) -> dict[TopicPartition, int]:
        return await self.inner.lag()

    async def group_lag(self) -> dict[TopicPartition, int]:
        return await self.inner.group_lag()
