"""The Kafka adapter's producer: its poll thread serves every delivery report and ends with the
close of its own start, also when the broker is started again while that close is under way."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pizzeria.messaging.broker import BrokerError, OutgoingMessage, TopicSpec
from pizzeria.messaging.kafka import KafkaBroker
from tests.support.kafka import KafkaCluster
from tests.support.polling import eventually

pytestmark = pytest.mark.kafka


def poll_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "kafka-producer-poll"}


async def test_each_start_has_a_poll_thread_that_ends_with_its_close(kafka: KafkaCluster, unique: str) -> None:
    topic = f"producer-{unique}"
    broker = kafka.broker()
    await broker.create_topics([TopicSpec(topic, partitions=1)])

    before = poll_threads()
    await broker.start()
    (first,) = poll_threads() - before
    await broker.publish([OutgoingMessage(topic, b"one", "k", {"n": "1"})])  # acknowledged: reports served
    closing = asyncio.create_task(broker.close())
    await asyncio.sleep(0)  # the close runs up to its first wait (the flush)
    await broker.start()  # started again while that close is under way
    await closing
    (second,) = poll_threads() - before - {first}
    await eventually(lambda: not first.is_alive(), "the first producer's poll thread to end")
    assert second.is_alive()  # the second start's thread was not stopped by the first close
    await broker.publish([OutgoingMessage(topic, b"two", "k", {"n": "2"})])
    await broker.close()
    await eventually(lambda: not second.is_alive(), "the second producer's poll thread to end")

    consumer = kafka.broker().consumer(f"g-{unique}", [topic])
    await consumer.start()
    try:
        seen: list[bytes] = []

        async def both() -> bool:
            seen.extend(r.value for r in await consumer.fetch(10, 0.5))
            return len(seen) >= 2

        await eventually(both, "both messages to be read back")
        assert seen == [b"one", b"two"]
    finally:
        await consumer.close()


async def publish_while_cut_then_close(
    kafka: KafkaCluster, broker: KafkaBroker, batch: list[OutgoingMessage], error: str
) -> None:
    """Publish `batch` with every connection to Kafka cut, close the broker while the publish
    waits, and require the publish to end with a `BrokerError` matching `error`."""
    [proxy] = kafka.proxies.values()
    proxy.cut()
    try:
        waiting = asyncio.create_task(broker.publish(batch))
        await asyncio.sleep(0)  # the publish runs up to its wait (for a report, or for room)
        assert not waiting.done()
        await broker.close()
        with pytest.raises(BrokerError, match=error):
            await asyncio.wait_for(waiting, 30)
    finally:
        proxy.mend()


async def test_a_close_that_cannot_deliver_ends_the_waiting_publish_with_an_error(
    kafka: KafkaCluster, unique: str
) -> None:
    topic = f"producer-{unique}"
    broker = kafka.broker()
    await broker.create_topics([TopicSpec(topic, partitions=1)])
    await broker.start()
    await broker.publish([OutgoingMessage(topic, b"one", "k", {"n": "1"})])
    # produced, waiting for its report: the close's flush gives up on it
    lost = [OutgoingMessage(topic, b"lost", "k", {"n": "2"})]
    await publish_while_cut_then_close(kafka, broker, lost, "not acknowledged")


async def test_a_publish_waiting_for_room_when_the_broker_closes_fails(kafka: KafkaCluster, unique: str) -> None:
    topic = f"producer-{unique}"
    broker = kafka.broker(producer_config={"queue.buffering.max.messages": 1})
    await broker.create_topics([TopicSpec(topic, partitions=1)])
    await broker.start()
    # the first message queued, the second waits for room
    batch = [OutgoingMessage(topic, str(n).encode(), "k", {"n": str(n)}) for n in range(3)]
    await publish_while_cut_then_close(kafka, broker, batch, "waited for room")
