"""How the Kafka adapter measures a consumer's lag: on the consumer's own thread, between two
fetches, so every request it makes holds up the records the member hands out. The ends of the
partitions it fetches come from librdkafka's last fetch responses; only the unknown ones are
asked for, together. (The values themselves, against a real broker:
tests/integration/test_broker_conformance.py.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pizzeria.messaging.broker import BrokerError
from pizzeria.messaging.kafka import _lag_of


class RecordingConsumer:
    """What `_lag_of` may call on a confluent-kafka consumer, each call written down."""

    def __init__(self, fetched_ends: dict[tuple[str, int], int], committed: dict[tuple[str, int], int]) -> None:
        self.fetched_ends = fetched_ends  # what the last fetch responses said
        self.ends = {("t", p): 100 + p for p in range(64)}  # what the broker would say if asked
        self.committed_offsets = committed
        self.calls: list[tuple[str, Any]] = []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls.append(("committed", len(partitions)))
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_offsets.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = -1, cached: bool = False) -> tuple[int, int]:
        self.calls.append(("watermarks", cached))
        if not cached:
            return 0, self.ends[(tp.topic, tp.partition)]
        if tp.partition == 63:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return -1001, self.fetched_ends.get((tp.topic, tp.partition), -1001)

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls.append(("offsets_for_times", sorted((tp.partition, tp.offset) for tp in partitions)))
        return [TopicPartition(tp.topic, tp.partition, self.ends[(tp.topic, tp.partition)]) for tp in partitions]


def test_the_ends_of_fetched_partitions_cost_no_request() -> None:
    partitions = [("t", p) for p in range(42)]
    consumer = RecordingConsumer({tp: 100 + tp[1] for tp in partitions}, {("t", 0): 90, ("t", 1): 101})
    lag = _lag_of(consumer, partitions, set(partitions))  # type: ignore[arg-type]
    assert lag[("t", 0)] == 10
    assert lag[("t", 1)] == 0
    assert lag[("t", 2)] == 102  # nothing committed: the whole partition
    assert set(lag) == set(partitions)
    asked = [call for call in consumer.calls if call[0] != "watermarks" or call[1] is False]
    assert asked == [("committed", 42)], "only the committed offsets are a request to the broker"


def test_unknown_ends_are_asked_for_in_one_request() -> None:
    partitions = [("t", p) for p in (0, 1, 62, 63)]  # 62 not fetched yet; 63 unknown to librdkafka
    consumer = RecordingConsumer({("t", 0): 100, ("t", 1): 101}, {("t", 62): 150})
    lag = _lag_of(consumer, partitions, set(partitions))  # type: ignore[arg-type]
    assert lag == {("t", 0): 100, ("t", 1): 101, ("t", 62): 12, ("t", 63): 163}
    asked = [call for call in consumer.calls if call[0] != "watermarks"]
    assert asked == [("committed", 4), ("offsets_for_times", [(62, -1), (63, -1)])]
    assert ("watermarks", False) not in consumer.calls


def test_the_cached_end_of_a_partition_this_member_does_not_fetch_is_not_trusted() -> None:
    """A partition that moved to another member (or came back a moment ago) keeps, in this
    member's cache, the end its last fetch saw: its end is asked for."""
    partitions = [("t", 0), ("t", 1)]
    consumer = RecordingConsumer({("t", 0): 5, ("t", 1): 101}, {("t", 0): 5})  # t[0]'s end has moved on to 100
    lag = _lag_of(consumer, partitions, {("t", 1)})  # type: ignore[arg-type]
    assert lag == {("t", 0): 95, ("t", 1): 101}
    asked = [call for call in consumer.calls if call[0] != "watermarks"]
    assert asked == [("committed", 2), ("offsets_for_times", [(0, -1)])]


def test_an_end_the_broker_cannot_give_is_an_error_not_a_lag_of_zero() -> None:
    consumer = RecordingConsumer({}, {})

    def refuse(partitions: list[TopicPartition], timeout: float) -> list[Any]:
        error = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)
        return [SimpleNamespace(topic="t", partition=5, offset=-1, error=error)]

    consumer.offsets_for_times = refuse  # type: ignore[method-assign]
    with pytest.raises(BrokerError, match=r"t\[5\]"):
        _lag_of(consumer, [("t", 5)], {("t", 5)})  # type: ignore[arg-type]
