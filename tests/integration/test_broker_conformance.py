"""One conformance suite, every broker adapter: the embedded SQL log on SQLite and on
PostgreSQL, and Apache Kafka. Each adapter must keep the same promises."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import orjson
import pytest

from pizzeria.messaging.broker import Broker, BrokerError, OutgoingMessage, TopicSpec
from tests.integration.brokers import BrokerHarness, drain, kafka, next_offsets, sqllog_postgres, sqllog_sqlite
from tests.support.kafka import KafkaCluster
from tests.support.postgres import create_database, drop_database
from tests.support.tcpproxy import TcpProxy

BACKENDS = ["sqllog-sqlite", "sqllog-postgres", pytest.param("kafka", marks=pytest.mark.kafka)]


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path, unique: str) -> AsyncIterator[BrokerHarness]:
    prefix = f"t{unique}"
    proxy: TcpProxy | None = None
    pg_db: str | None = None
    if request.param == "sqllog-sqlite":
        h = sqllog_sqlite(str(tmp_path / "broker.db"), prefix)
    elif request.param == "sqllog-postgres":
        pg_db = url = await create_database()
        proxy = TcpProxy(5432).start()
        db_name = url.rsplit("/", 1)[1]
        h = sqllog_postgres(
            f"postgresql://postgres@127.0.0.1:{proxy.listen_port}/{db_name}",
            lambda: proxy.drop_all(refuse_for=1.0),
            prefix,
        )  # type: ignore[union-attr]
    else:
        cluster: KafkaCluster = request.getfixturevalue("kafka")
        h = kafka(cluster.broker, lambda: cluster.drop_client_connections(refuse_for=1.0), prefix)
    try:
        yield h
    finally:
        await h.close()
        if proxy is not None:
            proxy.close()
        if pg_db is not None:
            await drop_database(pg_db)


def message(topic: str, key: str | None, n: int, **extra: str) -> OutgoingMessage:
    return OutgoingMessage(
        topic=topic, key=key, value=orjson.dumps({"n": n, "key": key}), headers={"ce_id": str(uuid.uuid4()), **extra}
    )


async def make_topic(broker: Broker, h: BrokerHarness, name: str, partitions: int = 3) -> str:
    topic = h.topic(name)
    await broker.create_topics([TopicSpec(topic, partitions=partitions)])
    return topic


async def test_publish_then_consume_keeps_key_value_and_headers(harness: BrokerHarness) -> None:
    broker = await harness.client()
    topic = await make_topic(broker, harness, "basic")
    sent = [message(topic, f"k{i}", i, trace="abc") for i in range(20)]
    await broker.publish(sent)

    consumer = broker.consumer(harness.group("g"), [topic])
    await consumer.start()
    got = await drain(consumer, 20)
    await consumer.close()

    assert sorted(orjson.loads(r.value)["n"] for r in got) == list(range(20))
    by_n = {orjson.loads(r.value)["n"]: r for r in got}
    for i, m in enumerate(sent):
        assert by_n[i].key == m.key
        assert list(by_n[i].headers.items()) == list(m.headers.items())  # every one, in order
        assert by_n[i].headers["trace"] == "abc"
        assert by_n[i].topic == topic
        assert by_n[i].timestamp_ms > 0


async def test_topics_are_created_explicitly_and_idempotently(harness: BrokerHarness) -> None:
    broker = await harness.client()
    topic = await make_topic(broker, harness, "twice")
    await broker.create_topics([TopicSpec(topic, partitions=3)])  # no error the second time
    await broker.publish([message(topic, "a", 1)])
    # sqllog never creates a topic on publish. Kafka's test brokers don't either
    # (auto.create.topics.enable=false), but the producer only gives up on an unknown topic
    # after its 30 s metadata wait, too slow to check here.
    if harness.name.startswith("sqllog"):
        with pytest.raises(BrokerError):
            await broker.publish([message(harness.topic("never-created"), "a", 1)])


async def test_same_key_keeps_its_order(harness: BrokerHarness) -> None:
    broker = await harness.client()
    topic = await make_topic(broker, harness, "order", partitions=3)
    keys = [f"order-{i}" for i in range(10)]
    counters = dict.fromkeys(keys, 0)
    batch = []
    for _ in range(300):
        key = random.choice(keys)
        batch.append(message(topic, key, counters[key]))
        counters[key] += 1
        if len(batch) == 37:  # several publish calls, interleaved keys
            await broker.publish(batch)
            batch = []
    await broker.publish(batch)

    consumer = broker.consumer(harness.group("g"), [topic])
    await consumer.start()
    got = await drain(consumer, 300)
    await consumer.close()

    seen: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in got:
        seen[r.key or ""].append(orjson.loads(r.value)["n"])
        partitions[r.key or ""].add(r.partition)
    assert len(got) == 300
    for key in keys:
        assert seen[key] == list(range(counters[key])), f"{key} out of order"
        assert len(partitions[key]) == 1, "a key must always land on one partition"


async def test_two_groups_each_receive_everything(harness: BrokerHarness) -> None:
    broker = await harness.client()
    topic = await make_topic(broker, harness, "fanout")
    await broker.publish([message(topic, f"k{i % 7}", i) for i in range(100)])

    one = broker.consumer(harness.group("one"), [topic])
    two = broker.consumer(harness.group("two"), [topic])
    await asyncio.gather(one.start(), two.start())
    got_one, got_two = await asyncio.gather(drain(one, 100), drain(two, 100))
    await asyncio.gather(one.close(), two.close())

    assert sorted(orjson.loads(r.value)["n"] for r in got_one) == list(range(100))
    assert sorted(orjson.loads(r.value)["n"] for r in got_two) == list(range(100))


async def test_uncommitted_records_are_delivered_again_after_the_consumer_dies(harness: BrokerHarness) -> None:
    broker = await harness.client()
    topic = await make_topic(broker, harness, "redeliver")
    await broker.publish([message(topic, f"k{i % 5}", i) for i in range(30)])
    group = harness.group("g")

    first = broker.consumer(group, [topic])
    await first.start()
    seen = await drain(first, 30, commit=False)
    assert len(seen) == 30
    await first.close()  # dies before committing anything

    second = broker.consumer(group, [topic])
    await second.start()
    again = await drain(second, 30)
    await second.close()
    assert sorted(orjson.loads(r.value)["n"] for r in again) == list(range(30))


async def test_a_new_member_resumes_from_the_committed_offset(harness: BrokerHarness) -> None:
    broker = await harness.client()
    topic = await make_topic(broker, harness, "resume", partitions=1)
    await broker.publish([message(topic, "same", i) for i in range(100)])
    group = harness.group("g")

    first = broker.consumer(group, [topic])
    await first.start()
    head = await drain(first, 40, commit=False, batch=40)
    head = head[:40]
    await first.commit(next_offsets(head))
    await first.close()

    second = broker.consumer(group, [topic])
    await second.start()
    rest = await drain(second, 60)
    await second.close()
    assert [orjson.loads(r.value)["n"] for r in head] == list(range(40))
    assert [orjson.loads(r.value)["n"] for r in rest] == list(range(40, 100))


async def test_ten_thousand_messages_survive_a_dropped_connection(harness: BrokerHarness) -> None:
    total = 10_000
    producer = await harness.client()
    topic = await make_topic(producer, harness, "bulk")
    consumer_side = await harness.client()
    consumer = consumer_side.consumer(harness.group("g"), [topic])
    await consumer.start()
    received: set[int] = set()
    disrupted = asyncio.Event()
    dropped = 0

    async def produce() -> None:
        nonlocal dropped
        for start in range(0, total, 250):
            batch = [message(topic, f"k{i % 50}", i) for i in range(start, start + 250)]
            while True:  # the outbox relay's contract: retry until acknowledged
                try:
                    await producer.publish(batch)
                    break
                except BrokerError:
                    await asyncio.sleep(0.1)
            if start >= total // 2 and not disrupted.is_set():
                disrupted.set()
                dropped = await harness.disrupt()

    async def consume() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        while len(received) < total and loop.time() < deadline:
            try:
                records = await consumer.fetch(1000, timeout=0.5)
                if records:
                    await consumer.commit(next_offsets(records))
            except BrokerError:
                continue
            received.update(orjson.loads(r.value)["n"] for r in records)

    await asyncio.gather(produce(), consume())
    await consumer.close()
    assert disrupted.is_set()
    assert dropped > 0, "the disruption must actually have cut live connections"
    missing = set(range(total)) - received
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:10]}"


@pytest.mark.parametrize("harness", ["sqllog-sqlite", "sqllog-postgres"], indirect=True)
async def test_a_member_that_stops_heartbeating_loses_its_partitions(harness: BrokerHarness) -> None:
    """A consumer process killed outright never leaves the group: its partitions must move to
    the surviving member once its session times out. (A Kafka member cannot be killed inside
    this process; the whole-system crash tests kill one with SIGKILL.)"""
    broker = await harness.client()
    topic = await make_topic(broker, harness, "abrupt")
    await broker.publish([message(topic, f"k{i}", i) for i in range(30)])
    group = harness.group("g")

    doomed = broker.consumer(group, [topic])
    await doomed.start()
    assert len(doomed.assignment()) == 3
    doomed._heartbeat.cancel()  # type: ignore[attr-defined]  # "kill -9": no leave, no heartbeat

    survivor = broker.consumer(group, [topic])
    await survivor.start()
    got = await drain(survivor, 30, timeout=30)
    await survivor.close()
    assert sorted(orjson.loads(r.value)["n"] for r in got) == list(range(30))


async def test_the_group_lag_of_a_partition_that_moved_to_another_member_is_its_end_now(
    harness: BrokerHarness,
) -> None:
    """A member that read a partition, then lost it to a new member, must not report that
    partition's lag from what it saw before (Kafka: the end its last fetch cached): records
    published since count, or a rebuilt read model would go live without them."""
    broker = await harness.client()
    topic = await make_topic(broker, harness, "moved", partitions=4)
    await broker.publish([message(topic, f"k{i}", i) for i in range(40)])
    group = harness.group("g")
    every = {(topic, p) for p in range(4)}
    first = broker.consumer(group, [topic])
    await first.start()
    second = broker.consumer(group, [topic])
    try:
        assert len(await drain(first, 40)) == 40  # every partition read and committed
        await second.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not (second.assignment() and first.assignment() | second.assignment() == every):
            assert loop.time() < deadline, f"partitions never shared: {first.assignment()} {second.assignment()}"
            await asyncio.gather(*(m.fetch(1, timeout=0.2) for m in (first, second)))
        moved = second.assignment()
        assert not first.assignment() & moved
        await broker.publish([message(topic, f"k{i}", i) for i in range(100, 140)])
        deadline = loop.time() + 30
        while sum((lags := await first.group_lag()).values()) != 40:
            # the ends of the first member's own partitions may be a fetch's wait behind; the
            # moved ones' must not stay where they were
            assert loop.time() < deadline, f"the moved partitions' lag stayed stale: {lags}"
            await asyncio.sleep(0.2)
        assert lags == await second.group_lag()
    finally:
        await first.close()
        await second.close()


async def test_members_of_a_group_share_its_partitions_and_the_group_lag_covers_them_all(
    harness: BrokerHarness,
) -> None:
    """Replicas of a service are members of its groups: each owns a share of the partitions
    and its `lag` covers that share, while `group_lag` says how far the whole group is behind
    (the read model's rebuild switches on it)."""
    broker = await harness.client()
    topic = await make_topic(broker, harness, "shared", partitions=4)
    await broker.publish([message(topic, f"k{i}", i) for i in range(40)])
    group = harness.group("g")
    every = {(topic, p) for p in range(4)}
    members = [broker.consumer(group, [topic]), broker.consumer(group, [topic])]
    for member in members:
        await member.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        first, second = members
        # Kafka hands out partitions while members poll: poll (reading nothing for good) until
        # each member holds a share and together they hold every partition.
        while not (first.assignment() and second.assignment() and first.assignment() | second.assignment() == every):
            assert loop.time() < deadline, f"partitions never shared: {first.assignment()} {second.assignment()}"
            await asyncio.gather(*(m.fetch(1, timeout=0.2) for m in members))
        assert not first.assignment() & second.assignment()
        ends = await first.group_lag()  # nothing committed yet: each partition's end
        assert set(ends) == every
        assert sum(ends.values()) == 40
        assert set(await first.lag()) == first.assignment()
        await first.commit({tp: ends[tp] for tp in first.assignment()})
        halfway = await second.group_lag()
        assert {tp: halfway[tp] for tp in first.assignment()} == dict.fromkeys(first.assignment(), 0)
        assert {tp: halfway[tp] for tp in second.assignment()} == {tp: ends[tp] for tp in second.assignment()}
        await second.commit({tp: ends[tp] for tp in second.assignment()})
        assert set((await first.group_lag()).values()) == {0}
    finally:
        for member in members:
            await member.close()
