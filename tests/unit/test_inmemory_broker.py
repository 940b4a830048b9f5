"""The in-memory broker keeps the promises of the broker port (so runner tests on it mean
something): explicit topics, key → partition, dense offsets, committed offsets per group,
redelivery of what was not committed."""

from __future__ import annotations

import asyncio

import pytest

from pizzeria.messaging.broker import BrokerError, OutgoingMessage, TopicSpec
from pizzeria.messaging.sqllog import partition_for
from tests.fakes import InMemoryBroker


def msg(topic: str, key: str | None, n: int) -> OutgoingMessage:
    return OutgoingMessage(topic=topic, key=key, value=str(n).encode(), headers={"n": str(n)})


@pytest.fixture
async def topic(broker: InMemoryBroker) -> str:
    await broker.create_topics([TopicSpec("t.events", partitions=3)])
    return "t.events"


async def test_create_topics_is_idempotent(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([msg(topic, "k", 1)])
    await broker.create_topics([TopicSpec(topic, partitions=8), TopicSpec("u.events", partitions=2)])
    assert broker.topics() == {topic: 3, "u.events": 2}
    assert len(broker.records(topic)) == 1


async def test_publish_to_an_unknown_topic_raises_and_writes_nothing(broker: InMemoryBroker, topic: str) -> None:
    with pytest.raises(BrokerError, match="nowhere"):
        await broker.publish([msg(topic, "k", 1), msg("nowhere", "k", 2)])
    assert broker.records(topic) == []


async def test_calls_fail_while_unavailable_or_not_started(broker: InMemoryBroker, topic: str) -> None:
    broker.available = False
    with pytest.raises(BrokerError):
        await broker.publish([msg(topic, "k", 1)])
    with pytest.raises(BrokerError):
        await broker.ping()
    broker.available = True
    await broker.close()
    with pytest.raises(BrokerError, match="not started"):
        await broker.publish([msg(topic, "k", 1)])


async def test_a_key_keeps_its_partition_and_offsets_are_dense(broker: InMemoryBroker, topic: str) -> None:
    keys = [f"order-{i}" for i in range(10)]
    await broker.publish([msg(topic, k, n) for n in range(3) for k in keys])
    records = broker.records(topic)
    for key in keys:
        mine = [r for r in records if r.key == key]
        assert {r.partition for r in mine} == {partition_for(key, 3)}
        assert [r.value for r in mine] == [b"0", b"1", b"2"]  # in publish order
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))
    assert sum(broker.end_offsets(topic).values()) == 30


async def test_records_keep_value_key_and_headers(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([OutgoingMessage(topic=topic, key="k", value=b"v", headers={"ce_id": "1"})])
    [record] = broker.records(topic)
    assert (record.topic, record.key, record.value, dict(record.headers)) == (
        topic,
        "k",
        b"v",
        {"ce_id": "1"},
    )
    assert record.timestamp_ms > 0


async def test_a_consumer_reads_from_its_committed_position(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([msg(topic, "k", n) for n in range(5)])
    first = broker.consumer("g", [topic])
    await first.start()
    records = await first.fetch(10, timeout=0)
    assert [r.value for r in records] == [b"0", b"1", b"2", b"3", b"4"]
    assert await first.fetch(10, timeout=0) == []  # the position moved on
    await first.commit({(topic, records[2].partition): records[2].offset + 1})
    await first.close()

    second = broker.consumer("g", [topic])
    await second.start()
    assert [r.value for r in await second.fetch(10, timeout=0)] == [b"3", b"4"]
    await second.close()


async def test_close_without_commit_redelivers(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([msg(topic, "a", 1), msg(topic, "b", 2)])
    first = broker.consumer("g", [topic])
    await first.start()
    assert len(await first.fetch(10, timeout=0)) == 2
    await first.close()
    second = broker.consumer("g", [topic])
    await second.start()
    assert sorted(r.value for r in await second.fetch(10, timeout=0)) == [b"1", b"2"]
    await second.close()


async def test_groups_are_independent(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([msg(topic, "k", 1)])
    a, b = broker.consumer("a", [topic]), broker.consumer("b", [topic])
    await a.start()
    await b.start()
    [record] = await a.fetch(10, timeout=0)
    await a.commit({(topic, record.partition): record.offset + 1})
    assert len(await b.fetch(10, timeout=0)) == 1
    assert broker.committed("b") == {}
    assert broker.committed("a") == {(topic, record.partition): 1}


async def test_the_first_member_owns_all_partitions_and_a_later_one_is_fenced(
    broker: InMemoryBroker, topic: str
) -> None:
    await broker.publish([msg(topic, "k", 1)])
    owner, spare = broker.consumer("g", [topic]), broker.consumer("g", [topic])
    await owner.start()
    await spare.start()
    assert owner.assignment() == {(topic, 0), (topic, 1), (topic, 2)}
    assert spare.assignment() == set()
    assert await spare.fetch(10, timeout=0) == []
    await spare.commit({(topic, 0): 99})
    assert broker.committed("g") == {}

    await owner.close()
    assert spare.assignment() == {(topic, 0), (topic, 1), (topic, 2)}
    assert len(await spare.fetch(10, timeout=0)) == 1
    await spare.close()


async def test_fetch_waits_for_records_until_its_timeout(broker: InMemoryBroker, topic: str) -> None:
    consumer = broker.consumer("g", [topic])
    await consumer.start()
    waiting = asyncio.create_task(consumer.fetch(10, timeout=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    await broker.publish([msg(topic, "k", 7)])
    records = await asyncio.wait_for(waiting, 5)
    assert [r.value for r in records] == [b"7"]
    await consumer.close()


async def test_fetch_respects_max_records(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([msg(topic, f"k{n}", n) for n in range(20)])
    consumer = broker.consumer("g", [topic])
    await consumer.start()
    batches = [await consumer.fetch(7, timeout=0) for _ in range(4)]
    assert [len(b) for b in batches] == [7, 7, 6, 0]
    assert sorted(int(r.value) for b in batches for r in b) == list(range(20))
    await consumer.close()


async def test_lag_counts_uncommitted_records(broker: InMemoryBroker, topic: str) -> None:
    await broker.publish([msg(topic, "k", n) for n in range(4)])
    consumer = broker.consumer("g", [topic])
    await consumer.start()
    records = await consumer.fetch(10, timeout=0)
    partition = records[0].partition
    await consumer.commit({(topic, partition): 1})
    lag = await consumer.lag()
    assert lag[(topic, partition)] == 3
    assert sum(lag.values()) == 3
    await consumer.close()


async def test_a_consumer_of_an_unknown_topic_cannot_start(broker: InMemoryBroker) -> None:
    with pytest.raises(BrokerError, match="unknown topic"):
        await broker.consumer("g", ["missing.events"]).start()
