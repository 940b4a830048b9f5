"""Apache Kafka as production runs it: three brokers, replication factor 3, two replicas in sync
for a write. The leader of a partition is killed outright while messages stream through the
project's Kafka adapter: nothing acknowledged is lost, nothing is written twice, each key keeps
its order, and the broker rejoins the in-sync replicas when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import orjson
import pytest

from pizzeria.messaging.broker import BrokerConsumer, BrokerError, OutgoingMessage, Record, TopicSpec
from tests.integration.brokers import drain, next_offsets
from tests.support.kafka import KafkaCluster, running_kafka

pytestmark = pytest.mark.kafka

TOTAL = 3000
BATCH = 100
KEYS = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with running_kafka(tmp_path_factory.mktemp("kafka-cluster"), size=3) as started:
        yield started


def batch(topic: str, start: int) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(topic=topic, key=f"k{n % KEYS}", value=orjson.dumps({"n": n}))
        for n in range(start, start + BATCH)
    ]


def numbers(records: list[Record]) -> list[int]:
    return [int(orjson.loads(r.value)["n"]) for r in records]


async def wait_for_isr(
    cluster: KafkaCluster, topic: str, partitions: int, want: list[int], timeout: float = 90.0
) -> dict[int, list[int]]:
    """Poll until every partition's in-sync replicas are `want`; return what was seen last."""
    deadline = time.monotonic() + timeout
    seen: dict[int, list[int]] = {}
    while time.monotonic() < deadline:
        for p in range(partitions):
            seen[p] = (await asyncio.to_thread(cluster.partition_state, topic, p))[1]
        if all(isr == want for isr in seen.values()):
            break
        await asyncio.sleep(0.2)
    return seen


async def test_killing_a_partition_leader_loses_and_duplicates_nothing(cluster: KafkaCluster, unique: str) -> None:
    topic = f"t{unique}.failover"
    producer = cluster.broker()
    reader = cluster.broker()
    await producer.start()
    await reader.start()
    consumers: list[BrokerConsumer] = []
    try:
        await producer.create_topics([TopicSpec(topic, partitions=3, replication_factor=3, min_insync_replicas=2)])
        assert await wait_for_isr(cluster, topic, 3, [1, 2, 3]) == {0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3]}
        victim = await asyncio.to_thread(cluster.leader, topic, 0)
        consumer = reader.consumer(f"g{unique}", [topic])
        consumers.append(consumer)
        await consumer.start()
        received: set[int] = set()
        killed_after = 0

        async def produce() -> None:
            nonlocal killed_after
            for start in range(0, TOTAL, BATCH):
                # acks=all: each call returns only once two replicas hold the batch. No retry
                # here: the producer must ride out the failover by itself, or fail the test.
                await producer.publish(batch(topic, start))
                if start == TOTAL // 3:
                    await asyncio.to_thread(cluster.kill, victim)
                    killed_after = start + BATCH

        async def consume() -> None:
            deadline = time.monotonic() + 180
            while len(received) < TOTAL and time.monotonic() < deadline:
                records = await consumer.fetch(500, timeout=0.5)
                received.update(numbers(records))
                if records:
                    # The group's coordinator may be the dead broker: a refused commit only
                    # means redelivery, which the check below allows.
                    with contextlib.suppress(BrokerError):
                        await consumer.commit(next_offsets(records))

        await asyncio.gather(produce(), consume())

        assert killed_after > 0
        assert not cluster.nodes[victim].running
        new_leader, isr = await asyncio.to_thread(cluster.partition_state, topic, 0)
        assert new_leader != victim, "leadership must have moved off the killed broker"
        assert victim not in isr
        missing = set(range(TOTAL)) - received
        assert not missing, f"{len(missing)} acknowledged messages never arrived, e.g. {sorted(missing)[:10]}"

        # The log itself, read from the start by a new group: each message exactly once, and
        # every key's messages in the order they were sent.
        written = await asyncio.to_thread(cluster.end_offsets, topic, 3)
        assert sum(written.values()) == TOTAL, f"the log holds {written}, not {TOTAL} records"
        fresh = reader.consumer(f"g{unique}-audit", [topic])
        consumers.append(fresh)
        await fresh.start()
        log = await drain(fresh, TOTAL)
        counts = Counter(numbers(log))
        assert sorted(counts) == list(range(TOTAL))
        assert [n for n, c in counts.items() if c > 1] == [], "the idempotent producer wrote a retry twice"
        by_key: dict[str, list[int]] = defaultdict(list)
        for record in sorted(log, key=lambda r: (r.partition, r.offset)):
            by_key[record.key or ""].append(int(orjson.loads(record.value)["n"]))
        for key, sent in by_key.items():
            assert sent == sorted(sent), f"{key} out of order"

        await asyncio.to_thread(cluster.restart, victim)
        assert await wait_for_isr(cluster, topic, 3, [1, 2, 3]) == {0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3]}
    finally:
        for opened in consumers:
            await opened.close()
        await producer.close()
        await reader.close()
