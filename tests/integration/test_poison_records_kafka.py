"""Decoding is total on Apache Kafka too: records of any bytes (keys and header values that are
not UTF-8, attributes that overflow or are too long, data of no schema), produced with a plain
client, each end handled, ignored or dead-lettered with the reason by a consumer group reading
through the real adapter, and the group moves past every one of them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import confluent_kafka
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.kit.db import Database
from pizzeria.messaging.broker import BrokerConsumer, TopicSpec
from pizzeria.messaging.consumer import ConsumerRunner
from pizzeria.messaging.deadletters import DeadLetterStore
from pizzeria.messaging.tables import dead_letters, metadata
from pizzeria.messaging.uow import UnitOfWork
from tests.support.kafka import KafkaCluster
from tests.support.records import RawRecord, check_outcomes, probe_runner, raw_records

pytestmark = pytest.mark.kafka
PARTITIONS = 3


@dataclass
class Group:
    """One consumer group on one topic, reading through the adapter, and a raw producer."""

    topic: str
    group: str
    consumer: BrokerConsumer
    runner: ConsumerRunner
    producer: confluent_kafka.Producer
    db: Database
    seen: set[str] = field(default_factory=set)

    def produce(self, records: list[RawRecord]) -> list[tuple[int, int]]:
        """Produce the records as they are; their (partition, offset) once acknowledged."""
        positions: list[tuple[int, int] | None] = [None] * len(records)
        done = threading.Event()
        left = [len(records)]

        def report(n: int) -> object:
            def on_delivery(err: object, message: confluent_kafka.Message) -> None:
                assert err is None, err
                positions[n] = (message.partition(), message.offset())
                left[0] -= 1
                if not left[0]:
                    done.set()

            return on_delivery

        for n, record in enumerate(records):
            headers = [(name, value) for name, value in record.headers if isinstance(value, bytes)]
            self.producer.produce(
                self.topic,
                value=record.value,
                key=record.key,
                headers=headers,
                partition=n % PARTITIONS,
                on_delivery=report(n),
            )
        deadline = time.monotonic() + 30
        while not done.is_set():
            assert time.monotonic() < deadline, "the records were never acknowledged"
            self.producer.poll(0.05)
        return [p for p in positions if p is not None]


@pytest.fixture
async def group(kafka: KafkaCluster, tmp_path: Path) -> AsyncIterator[Group]:
    db = Database(f"sqlite:///{tmp_path}/svc.db")
    async with db.transaction() as conn:
        await conn.run_sync(metadata.create_all)
    broker = kafka.broker()
    await broker.start()
    topic, name = f"poison-{uuid.uuid4().hex[:10]}", f"poison-{uuid.uuid4().hex[:10]}"
    await broker.create_topics([TopicSpec(topic, partitions=PARTITIONS)])

    def uow() -> UnitOfWork:
        return UnitOfWork(db, source="/pizzeria/poison-test")

    seen: set[str] = set()
    runner = probe_runner(name, topic, broker, uow, DeadLetterStore(db, uow), seen)
    consumer = broker.consumer(name, [topic])
    await consumer.start()
    group = Group(topic, name, consumer, runner, confluent_kafka.Producer(kafka.client_config()), db)
    group.seen = seen
    try:
        yield group
    finally:
        group.producer.flush(10)
        group.producer = None  # type: ignore[assignment]  # destroyed now, not after the broker stopped
        await consumer.close()
        await broker.close()
        await db.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(raw_records(json_headers=False), min_size=1, max_size=10))
async def test_any_record_on_kafka_is_handled_ignored_or_dead_lettered_and_the_group_moves_on(
    group: Group, records: list[RawRecord]
) -> None:
    positions = await asyncio.to_thread(group.produce, records)
    done: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 90
    while not set(positions) <= done:
        assert time.monotonic() < deadline, f"the group never moved past {set(positions) - done}"
        fetched = await group.consumer.fetch(200, timeout=0.5)
        if fetched:
            await group.consumer.commit(await asyncio.wait_for(group.runner.process_batch(fetched), 30))
            done |= {(r.partition, r.offset) for r in fetched}
    assert not group.runner.stuck()
    async with group.db.read() as conn:
        rows = (await conn.execute(sa.select(dead_letters).where(dead_letters.c.group_id == group.group))).all()
    dead = {(r.partition, r.offset): r.error for r in rows}
    check_outcomes(list(zip(records, positions, strict=True)), dead, group.seen)
