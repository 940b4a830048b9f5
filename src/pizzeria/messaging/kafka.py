"""The production broker adapter: Apache Kafka through confluent-kafka (librdkafka).

Producer: acks=all and idempotence, so a retried send is never written twice and order per
partition survives retries. Consumer: no auto-commit; the runner commits offsets only after the
handler's transaction committed. librdkafka is thread-based, so each consumer gets one thread
of its own and the producer's delivery reports are handed back to the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pizzeria.kit.ids import new_id
from pizzeria.messaging.broker import (
    Broker,
    BrokerConsumer,
    BrokerError,
    OutgoingMessage,
    Record,
    TopicPartition,
    TopicSpec,
    as_text,
)

# Commit refusals that only mean "this member no longer owns the partition".
_FENCED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._NO_OFFSET,
    KafkaError._STATE,
    KafkaError._ASSIGNMENT_LOST,
}


def _record(m: Any) -> Record:
    """A consumed message as a Record, whatever bytes its key and headers hold."""
    defects: list[str] = []
    raw_key = m.key()
    key = None if raw_key is None else as_text(raw_key, "the key", defects)
    headers: dict[str, str] = {}
    try:
        pairs = m.headers() or []
    except Exception as exc:  # names librdkafka cannot hand over as text
        defects.append(f"the headers cannot be read: {exc}")
        pairs = []
    for raw_name, raw_value in pairs:
        name = as_text(raw_name, "a header name", defects)
        value = "" if raw_value is None else as_text(raw_value, f"the header {name[:64]!r}", defects)
        if name in headers and name.startswith("ce_"):
            defects.append(f"the header {name[:64]!r} appears more than once")
        headers[name] = value
    return Record(
        topic=m.topic(),
        partition=m.partition(),
        offset=m.offset(),
        value=m.value() or b"",
        key=key,
        headers=headers,
        timestamp_ms=m.timestamp()[1],
        defects=tuple(defects),
    )


class KafkaBroker(Broker):
    """Kafka through confluent-kafka; `bootstrap` is `host:port[,host:port...]`."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        session_timeout_ms: int = 6000,
        fetch_wait_max_ms: int = 500,
        linger_ms: int = 0,
        client_id: str = "pizzeria",
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        **_: object,
    ) -> None:
        self.bootstrap = bootstrap.rstrip("/")
        self.session_timeout_ms = session_timeout_ms
        self.fetch_wait_max_ms = fetch_wait_max_ms
        self.client_id = client_id
        self.producer_config = {
            "bootstrap.servers": self.bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "message.timeout.ms": 60000,
            "retry.backoff.ms": 50,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "partitioner": "murmur2_random",  # same key → partition as Java clients
            **(producer_config or {}),
        }
        self.consumer_config = dict(consumer_config or {})
        self._producer: confluent_kafka.Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = confluent_kafka.Producer(self.producer_config)
        self._stopping.clear()
        self._poller = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll_forever(self) -> None:
        assert self._producer is not None
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    async def close(self) -> None:
        if self._producer is None:
            return
        producer = self._producer
        await asyncio.to_thread(producer.flush, 10)
        self._stopping.set()
        if self._poller:
            await asyncio.to_thread(self._poller.join, 5)
        self._producer = None

    async def ping(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        try:
            await asyncio.to_thread(admin.list_topics, timeout=5)
        except KafkaException as exc:
            raise BrokerError(f"kafka unreachable: {exc}") from exc

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        try:
            meta = await asyncio.to_thread(admin.list_topics, timeout=10)
        except KafkaException as exc:
            raise BrokerError(f"kafka unreachable: {exc}") from exc
        missing = [t for t in topics if t.name not in meta.topics]
        if not missing:
            return
        futures = admin.create_topics(
            [
                NewTopic(
                    t.name,
                    num_partitions=t.partitions,
                    replication_factor=t.replication_factor,
                    config={"min.insync.replicas": str(t.min_insync_replicas)} if t.replication_factor > 1 else {},
                )
                for t in missing
            ],
            operation_timeout=30,
        )
        for name, future in futures.items():
            try:
                await asyncio.wrap_future(future)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"cannot create topic {name}: {exc}") from exc

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        if self._producer is None:
            raise BrokerError("broker not started")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []

        def reporter(future: asyncio.Future[None]) -> Any:
            def report(err: KafkaError | None, _msg: Any) -> None:
                loop.call_soon_threadsafe(_settle, future, err)

            return report

        for msg in messages:
            future: asyncio.Future[None] = loop.create_future()
            futures.append(future)
            while True:
                try:
                    self._producer.produce(
                        msg.topic,
                        value=msg.value,
                        key=msg.key.encode() if msg.key is not None else None,
                        headers=list(msg.headers.items()),
                        on_delivery=reporter(future),
                    )
                    break
                except BufferError:  # local queue full: let delivery reports drain it
                    await asyncio.sleep(0.005)
                except KafkaException as exc:
                    future.set_exception(BrokerError(str(exc)))
                    break
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise BrokerError(f"{len(errors)} of {len(messages)} messages not acknowledged: {errors[0]}")

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": group,
            "client.id": client_id or self.client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 6),
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            **self.consumer_config,
        }
        return KafkaConsumer(config, list(topics))


def _take(consumer: confluent_kafka.Consumer, max_records: int, timeout: float) -> list[Any]:
    """Wait for the first message only, then take whatever else is already fetched: `consume`
    alone would hold a partial batch until the timeout, adding that wait to every hop."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def _lag_of(consumer: confluent_kafka.Consumer, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Records between each partition's end and the group's committed offset (blocking)."""
    if not partitions:
        return {}
    committed = consumer.committed([confluent_kafka.TopicPartition(t, p) for t, p in partitions], timeout=5)
    out: dict[TopicPartition, int] = {}
    for tp in committed:
        _, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        out[(tp.topic, tp.partition)] = max(0, high - max(tp.offset, 0))
    return out


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(BrokerError(f"delivery failed: {err}"))


class KafkaConsumer(BrokerConsumer):
    """A Kafka consumer-group member, driven from one dedicated thread."""

    def __init__(self, config: dict[str, Any], topics: list[str]) -> None:
        self.config = config
        self.topics = topics
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"kafka-{config['group.id']}-{new_id()[-6:]}"
        )
        self._consumer: confluent_kafka.Consumer | None = None
        self._assigned: set[TopicPartition] = set()

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def start(self) -> None:
        def build() -> confluent_kafka.Consumer:
            consumer = confluent_kafka.Consumer(self.config)
            consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
            return consumer

        self._consumer = await self._call(build)

    def _on_assign(self, _: Any, partitions: list[Any]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}

    def _on_revoke(self, _: Any, partitions: list[Any]) -> None:
        self._assigned -= {(p.topic, p.partition) for p in partitions}

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        if self._consumer is None:
            raise BrokerError("consumer not started")
        messages = await self._call(_take, self._consumer, max_records, timeout)
        out: list[Record] = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise BrokerError(f"consumer failed: {err}")
                continue  # transient: librdkafka retries by itself
            out.append(_record(m))
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets or self._consumer is None:
            return
        tps = [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            await self._call(self._consumer.commit, offsets=tps, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() in _FENCED:
                return  # the partition moved to another member, who re-reads from the last commit
            raise BrokerError(f"commit failed: {exc}") from exc

    async def lag(self) -> dict[TopicPartition, int]:
        if self._consumer is None:
            return {}
        return dict(await self._call(_lag_of, self._consumer, sorted(self._assigned)))

    async def group_lag(self) -> dict[TopicPartition, int]:
        if self._consumer is None:
            raise BrokerError("consumer not started")
        consumer = self._consumer

        def measure() -> dict[TopicPartition, int]:
            every: list[TopicPartition] = []
            for topic in self.topics:
                found = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if found is None or found.error is not None:
                    raise BrokerError(f"cannot describe topic {topic}: {found.error if found else 'not found'}")
                every += [(topic, p) for p in sorted(found.partitions)]
            return _lag_of(consumer, every)

        return dict(await self._call(measure))

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await self._call(consumer.close)
        self._executor.shutdown(wait=False)
