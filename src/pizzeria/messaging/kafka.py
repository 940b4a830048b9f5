"""The production broker adapter: Apache Kafka through confluent-kafka (librdkafka).

Producer: acks=all and idempotence, so a retried send is never written twice and order per
partition survives retries. Consumer: no auto-commit; the runner commits offsets only after the
handler's transaction committed. librdkafka is thread-based, so each consumer gets one thread
of its own and the producer's delivery reports are handed back to the event loop.

Every client of one KafkaBroker logs in the same way (`login`: SASL, TLS): as one service, or as
the administrator who creates topics, users and ACLs (`apply_access`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from pizzeria.kit.ids import new_id
from pizzeria.kit.logging import get_logger
from pizzeria.kit.settings import KafkaLogin
from pizzeria.messaging.acl import Grant, Resource
from pizzeria.messaging.broker import (
    Broker,
    BrokerConsumer,
    BrokerError,
    OutgoingMessage,
    Record,
    TopicPartition,
    TopicSpec,
    as_text,
    header_text,
)

log = get_logger(__name__)

# Commit refusals that only mean "this member no longer owns the partition".
_FENCED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._NO_OFFSET,
    KafkaError._STATE,
    KafkaError._ASSIGNMENT_LOST,
}

#: What a broker says when the principal may not do what it asked: never transient, so a
#: consumer fails loudly instead of polling on in silence.
_REFUSED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
}

#: PBKDF2 rounds of the SCRAM credentials `apply_access` stores (Kafka's own tools use 4096).
SCRAM_ITERATIONS = 8192
_SCRAM = {"SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512, "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256}


def security_config(login: KafkaLogin | None) -> dict[str, Any]:
    """librdkafka's settings for logging in as `login` (none: an open PLAINTEXT broker)."""
    if login is None:
        return {}
    config: dict[str, Any] = {"security.protocol": login.protocol.lower()}
    if login.sasl:
        config.update(
            {"sasl.mechanism": login.mechanism, "sasl.username": login.username, "sasl.password": login.password}
        )
    if login.protocol.endswith("SSL") and login.ca_location:
        config["ssl.ca.location"] = login.ca_location
    return config


@dataclass(frozen=True)
class AccessChanges:
    """What `apply_access` changed."""

    users: tuple[str, ...]
    added: tuple[Grant, ...]
    removed: tuple[Grant, ...]


def _binding(grant: Grant, kind: type[AclBinding] = AclBinding) -> Any:
    """The ACL (or, with `kind` AclBindingFilter, the filter that matches only it)."""
    return kind(
        ResourceType.BROKER if grant.resource == "CLUSTER" else ResourceType[grant.resource],
        grant.name,
        ResourcePatternType[grant.pattern],
        grant.principal,
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def _grant(binding: Any) -> Grant:
    """An ALLOW rule of a user, from any host, as a grant."""
    return Grant(
        binding.principal.removeprefix("User:"),
        cast(Resource, "CLUSTER" if binding.restype == ResourceType.BROKER else binding.restype.name),
        binding.resource_pattern_type.name,
        binding.name,
        binding.operation.name,
    )


async def _settled(futures: Iterable[Future[Any]]) -> list[Any]:
    return [await asyncio.wrap_future(f) for f in futures]


def records_of(messages: Iterable[Any]) -> list[Record]:
    """The records of a run of consumed messages; the end of a partition and transient errors
    are skipped, a fatal error or a refusal raises."""
    out: list[Record] = []
    for m in messages:
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise BrokerError(f"consumer failed: {err}")
            if err.code() in _REFUSED:
                raise BrokerError(f"the broker refuses this consumer ({err.name()}): {err.str()}")
            continue  # transient: librdkafka retries by itself
        out.append(_record(m))
    return out


def _record(m: Any) -> Record:
    """A consumed message as a Record, whatever bytes its key and headers hold."""
    defects: list[str] = []
    raw_key = m.key()
    if raw_key is None:
        key = None
    elif type(raw_key) is bytes and raw_key.isascii():  # every key this system writes
        key = raw_key.decode("ascii")
    else:
        key = as_text(raw_key, "the key", defects)
    try:
        pairs = list(m.headers() or ())
    except Exception as exc:  # names librdkafka cannot hand over as text
        defects.append(f"the headers cannot be read: {exc}")
        pairs = []
    # Every record this system writes: names and values ASCII, no name twice. Read at once;
    # anything else (a value not bytes, or not ASCII, a name twice) header by header below.
    try:
        headers = {name: value.decode("ascii") for name, value in pairs}
        usual = len(headers) == len(pairs) and "".join(headers).isascii()
    except (AttributeError, TypeError, UnicodeDecodeError):
        usual = False
    if usual:
        return Record(
            m.topic(), m.partition(), m.offset(), m.value() or b"", key, headers, m.timestamp()[1], tuple(defects)
        )
    headers = {}
    for raw_name, raw_value in pairs:
        # (an ASCII name, every one this system writes, is text as it is: no checks for defects)
        name = raw_name if type(raw_name) is str and raw_name.isascii() else as_text(raw_name, "a header name", defects)
        value = "" if raw_value is None else header_text(name, raw_value, defects)
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
        login: KafkaLogin | None = None,
        **_: object,
    ) -> None:
        self.bootstrap = bootstrap.rstrip("/")
        self.session_timeout_ms = session_timeout_ms
        self.fetch_wait_max_ms = fetch_wait_max_ms
        self.client_id = client_id
        self.login = login
        self.security = security_config(login)
        self.producer_config = {
            "bootstrap.servers": self.bootstrap,
            "client.id": client_id,
            **self.security,
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
        #: The running producer's poll thread, and what tells it to end (new for each start).
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = confluent_kafka.Producer(self.producer_config)
        self._stopping = threading.Event()
        self._poller = threading.Thread(
            target=_poll_forever, args=(self._producer, self._stopping), name="kafka-producer-poll", daemon=True
        )
        self._poller.start()

    async def close(self) -> None:
        if self._producer is None:
            return
        # This start's producer, thread and event, taken before the first await: a start while
        # this close waits makes new ones, which are not this close's to stop.
        producer, poller, stopping = self._producer, self._poller, self._stopping
        self._producer = self._poller = None
        left = await asyncio.to_thread(producer.flush, 10)
        if left:
            # Never acknowledged (the brokers out of reach): once the thread stops nobody would
            # serve their reports, and a publish waiting for them would wait for ever. Purged,
            # each report is an error, its publish fails, and its outbox rows wait for the next
            # start.
            log.warning("closing with messages the brokers never acknowledged", count=left)
            await asyncio.to_thread(_purge, producer)
        stopping.set()
        if poller is not None:  # ends at its next wake-up: at most `PRODUCER_POLL_S`
            await asyncio.to_thread(poller.join, PRODUCER_POLL_S + 5)

    def admin(self) -> AdminClient:
        """An admin client that logs in as this broker's clients do."""
        return AdminClient({"bootstrap.servers": self.bootstrap, "client.id": self.client_id, **self.security})

    async def ping(self) -> None:
        """Ask the cluster for its topics: over the producer's own connections once started (a
        readiness probe every few seconds then neither opens a connection nor logs in again: a
        new client and its SCRAM login cost the service 60 to 100 ms of CPU, and the brokers a
        login), over a new admin client before. So a started client's ping does not log in
        again: a password changed since is found out when the producer next reconnects."""
        client = self._producer if self._producer is not None else self.admin()
        try:
            await asyncio.to_thread(client.list_topics, timeout=5)
        except KafkaException as exc:
            raise BrokerError(f"kafka unreachable: {exc}") from exc

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        admin = self.admin()
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

    async def apply_access(
        self, users: Mapping[str, str], grants: Sequence[Grant], *, mechanism: str = "SCRAM-SHA-512"
    ) -> AccessChanges:
        """Make what the users that `grants` name are allowed (from any host) exactly `grants`,
        and give each of `users` (name → password) a SCRAM credential for `mechanism`. Other
        rules of theirs (a DENY, one bound to a host) are left as they are. Run as a principal
        that may (a super user); again, it changes nothing but the credentials' salts."""
        if mechanism not in _SCRAM:
            raise BrokerError(f"users are made for SCRAM, not {mechanism}")
        admin = self.admin()
        try:
            if users:
                info = ScramCredentialInfo(_SCRAM[mechanism], SCRAM_ITERATIONS)
                await _settled(
                    admin.alter_user_scram_credentials(
                        [
                            UserScramCredentialUpsertion(user, info, password.encode())
                            for user, password in users.items()
                        ]
                    ).values()
                )
            wanted = set(grants)
            principals = sorted({g.principal for g in wanted})
            found: set[Grant] = set()
            for principal in principals:
                theirs = AclBindingFilter(
                    ResourceType.ANY,
                    None,  # type: ignore[arg-type]  # any name (the stub says str; librdkafka takes NULL)
                    ResourcePatternType.ANY,
                    principal,
                    "*",
                    AclOperation.ANY,
                    AclPermissionType.ALLOW,
                )
                found.update(_grant(b) for b in await asyncio.wrap_future(admin.describe_acls(theirs)))
            stale = sorted(found - wanted)
            missing = sorted(wanted - found)
            if stale:
                await _settled(admin.delete_acls([_binding(g, AclBindingFilter) for g in stale]).values())
            if missing:
                await _settled(admin.create_acls([_binding(g) for g in missing]).values())
        except KafkaException as exc:
            raise BrokerError(f"cannot set the users and ACLs: {exc}") from exc
        return AccessChanges(tuple(sorted(users)), tuple(missing), tuple(stale))

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        producer = self._producer
        if producer is None:
            raise BrokerError("broker not started")
        # One wake-up of the event loop for the whole batch: the delivery reports (on the poll
        # thread) are counted there, and the last one settles the batch's future.
        acks = _Acks(asyncio.get_running_loop(), len(messages))
        produce, report = producer.produce, acks.report
        for msg in messages:
            while True:
                try:
                    # (librdkafka takes the headers as a dict too, in its order, as it takes a list)
                    produce(
                        msg.topic,
                        value=msg.value,
                        key=msg.key.encode() if msg.key is not None else None,
                        headers=msg.headers if type(msg.headers) is dict else list(msg.headers.items()),
                        on_delivery=report,
                    )
                    break
                except BufferError:  # local queue full: let delivery reports drain it
                    await asyncio.sleep(0.005)
                    if self._producer is not producer:  # closed meanwhile: nobody serves its reports
                        raise BrokerError("the broker closed while messages waited for room") from None
                except KafkaException as exc:
                    acks.report(exc.args[0], None)
                    break
        errors = await acks.future
        if errors:
            raise BrokerError(f"{len(errors)} of {len(messages)} messages not acknowledged: {errors[0]}")

    def consumer(self, group: str, topics: Sequence[str], *, client_id: str = "") -> BrokerConsumer:
        config = {
            "bootstrap.servers": self.bootstrap,
            **self.security,
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
            "on_commit": _on_commit,
            **self.consumer_config,
        }
        return KafkaConsumer(config, list(topics))


#: How long the producer's poll thread waits for a delivery report before it looks whether it
#: should stop. A report ends the wait at once, so this sets only the thread's idle wake-ups
#: (at 50 ms, twenty a second, they cost an idle service about 1 ms of CPU a second, an eighth
#: of its idle CPU on Kafka: docs/performance.md) and how long a close waits for the thread.
PRODUCER_POLL_S = 0.5


def _purge(producer: confluent_kafka.Producer) -> None:
    """Drop what `producer` has not delivered and serve the reports that say so."""
    producer.purge()
    producer.flush(0)


def _poll_forever(producer: confluent_kafka.Producer, stopping: threading.Event) -> None:
    """Serve `producer`'s delivery reports (on this thread) until `stopping` is set."""
    while not stopping.is_set():
        producer.poll(PRODUCER_POLL_S)


def _take(
    consumer: confluent_kafka.Consumer,
    max_records: int,
    timeout: float,
    linger: float,
    offsets: list[confluent_kafka.TopicPartition],
) -> list[Any]:
    """Commit `offsets` (asynchronously: see `KafkaConsumer.commit`), wait for the first message
    only, then take whatever else is already fetched, or with a `linger` what arrives within it:
    `consume` alone would hold a partial batch until the timeout, adding that wait to every hop.
    One hand-over to the consumer's thread and back for a whole run."""
    if offsets:
        _commit_async(consumer, offsets)
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, linger)] if max_records > 1 else [first]


#: How long after its assignment a partition's cached end is trusted: until this member's first
#: fetch response for it, the cache holds whatever its last ownership left there (a fetch's
#: wait, `fetch.wait.max.ms`, is at most 500 ms by default; twice that, to be sure).
TRUST_CACHED_END_AFTER_S = 1.0


def _lag_of(
    consumer: confluent_kafka.Consumer, partitions: Sequence[TopicPartition], fetched: Collection[TopicPartition]
) -> dict[TopicPartition, int]:
    """Records between each partition's end and the group's committed offset (blocking, on the
    consumer's thread, between two fetches).

    The committed offsets are one request to the group's coordinator. The ends of the
    partitions this member fetches (`fetched`: owned, and long enough for a fetch response to
    have come) are the high watermarks of their last fetch responses, kept by librdkafka (at
    most a fetch's wait old). Only the others are asked for, in one request per broker: a
    partition another member owns keeps, in this member's cache, the end its last fetch saw
    before the partition moved. Asked for one at a time, each request queued behind the fetch
    that the broker holds for up to `fetch.wait.max.ms` on the same connection: a member of 42
    idle partitions spent 21 s in it, every 15 s, and handed out no record meanwhile."""
    if not partitions:
        return {}
    committed = consumer.committed([confluent_kafka.TopicPartition(t, p) for t, p in partitions], timeout=5)
    ends: dict[TopicPartition, int] = {}
    unknown: list[confluent_kafka.TopicPartition] = []
    for topic, partition in partitions:
        high = -1
        if (topic, partition) in fetched:
            with contextlib.suppress(KafkaException):
                _, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition), cached=True)
        if high >= 0:
            ends[(topic, partition)] = high
        else:  # a timestamp of -1 asks for the end (Kafka's ListOffsets "latest")
            unknown.append(confluent_kafka.TopicPartition(topic, partition, -1))
    if unknown:
        for tp in consumer.offsets_for_times(unknown, timeout=5):
            if tp.error is not None:
                raise BrokerError(f"cannot read the end of {tp.topic}[{tp.partition}]: {tp.error}")
            ends[(tp.topic, tp.partition)] = tp.offset
    return {(tp.topic, tp.partition): max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0)) for tp in committed}


class _Acks:
    """Delivery reports of one batch: counted on the producer's poll thread; the last one hands
    the errors (if any) to the event loop, once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[KafkaError]] = loop.create_future()
        self._left = expected
        self._errors: list[KafkaError] = []
        self._lock = threading.Lock()

    def report(self, err: KafkaError | None, _msg: Any) -> None:
        with self._lock:
            if err is not None:
                self._errors.append(err)
            self._left -= 1
            done = self._left == 0
        if done:
            self.loop.call_soon_threadsafe(_settle, self.future, self._errors)


def _settle(future: asyncio.Future[list[KafkaError]], errors: list[KafkaError]) -> None:
    if not future.done():
        future.set_result(errors)


class KafkaConsumer(BrokerConsumer):
    """A Kafka consumer-group member, driven from one dedicated thread."""

    def __init__(self, config: dict[str, Any], topics: list[str]) -> None:
        self.config = config
        self.topics = topics
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"kafka-{config['group.id']}-{new_id()[-6:]}"
        )
        self._consumer: confluent_kafka.Consumer | None = None
        #: Each owned partition, and when it was assigned (monotonic: see `_lag_of`).
        self._assigned: dict[TopicPartition, float] = {}
        self._committed: dict[TopicPartition, int] = {}
        #: Offsets handed to `commit` and not yet to the consumer's thread (see there).
        self._unsent: dict[TopicPartition, int] = {}

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
        now = time.monotonic()
        for p in partitions:
            self._assigned[(p.topic, p.partition)] = now

    def _on_revoke(self, _: Any, partitions: list[Any]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        for tp in gone:  # the next owner commits these from now on
            self._assigned.pop(tp, None)
            self._committed.pop(tp, None)
            self._unsent.pop(tp, None)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        return await self.fetch_run(max_records, timeout, 0.0)

    async def fetch_run(self, max_records: int, timeout: float, linger: float) -> list[Record]:
        if self._consumer is None:
            raise BrokerError("consumer not started")
        offsets, self._unsent = _partitions(self._unsent), {}
        try:
            messages = await self._call(_take, self._consumer, max_records, timeout, linger, offsets)
        except asyncio.CancelledError:
            # The fetch may never have reached the thread: its offsets go on their own (the
            # same offsets committed twice change nothing).
            if offsets:
                self._executor.submit(_commit_async, self._consumer, offsets)
            raise
        return records_of(messages)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit without waiting for the broker: the records are already handled and their
        effects committed with the inbox, so a commit that does not arrive (a crash, a
        rebalance) only means they are read again and recognised as duplicates. The offsets go
        to librdkafka on the consumer's own thread, before its next poll: made from the event
        loop, librdkafka's call would release and retake the GIL there. A fetch asked for in the
        same turn of the loop (the runner's, right after it commits) takes them along; otherwise
        they are handed to the thread on their own at the loop's next turn. Refusals are logged
        (`_on_commit`); the last offsets are committed synchronously on close."""
        # A partition revoked while its records were handled is the next owner's to commit.
        offsets = {tp: offset for tp, offset in offsets.items() if tp in self._assigned}
        if not offsets or self._consumer is None:
            return
        self._committed.update(offsets)
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._send_unsent)
        self._unsent.update(offsets)

    def _send_unsent(self) -> None:
        """Hand the offsets no fetch took along to the consumer's thread."""
        if self._unsent and self._consumer is not None:
            offsets, self._unsent = _partitions(self._unsent), {}
            self._executor.submit(_commit_async, self._consumer, offsets)

    async def lag(self) -> dict[TopicPartition, int]:
        if self._consumer is None:
            return {}
        consumer = self._consumer

        def measure() -> dict[TopicPartition, int]:  # on the consumer's thread, where assignments change
            return _lag_of(consumer, sorted(self._assigned), self._fetched())

        return dict(await self._call(measure))

    def _fetched(self) -> set[TopicPartition]:
        """The owned partitions whose cached ends are this ownership's (see `_lag_of`)."""
        before = time.monotonic() - TRUST_CACHED_END_AFTER_S
        return {tp for tp, at in self._assigned.items() if at <= before}

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
            return _lag_of(consumer, every, self._fetched())

        return dict(await self._call(measure))

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await self._call(_close, consumer, dict(self._committed))
        self._executor.shutdown(wait=False)


def _partitions(offsets: Mapping[TopicPartition, int]) -> list[confluent_kafka.TopicPartition]:
    return [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in offsets.items()]


def _commit_async(consumer: confluent_kafka.Consumer, offsets: list[confluent_kafka.TopicPartition]) -> None:
    try:
        consumer.commit(offsets=offsets, asynchronous=True)
    except KafkaException as exc:
        if exc.args[0].code() not in _FENCED:  # fenced: the partition's next owner re-reads
            log.warning("offset commit refused; the records will be read again", error=str(exc))
    except RuntimeError:  # closed meanwhile: the close committed the last offsets
        pass


def _on_commit(err: KafkaError | None, partitions: list[Any]) -> None:
    """librdkafka's report of an asynchronous commit (on the consumer's thread)."""
    failed = [p for p in partitions if p.error is not None]
    if err is not None and err.code() not in _FENCED:
        log.warning("offset commit refused; the records will be read again", error=str(err))
    elif failed and failed[0].error.code() not in _FENCED:
        log.warning("offset commit refused for some partitions", error=str(failed[0].error), count=len(failed))


def _close(consumer: confluent_kafka.Consumer, offsets: dict[TopicPartition, int]) -> None:
    """Leave the group after making sure the last offsets arrived (a clean stop re-reads nothing)."""
    if offsets:
        with contextlib.suppress(KafkaException):
            consumer.commit(offsets=_partitions(offsets), asynchronous=False)
    consumer.close()
