"""The consumer runner on the in-memory broker and a real SQLite service database: inbox
deduplication, retries, dead letters (table and `<group>.dlq` outbox row) and replay."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
import sqlalchemy as sa
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY as METRICS

from pizzeria.chassis.ops import act_on_dead_letter
from pizzeria.kit import context, tracing
from pizzeria.kit.db import Database
from pizzeria.kit.ids import new_id
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import OutgoingMessage, Record, TopicSpec
from pizzeria.messaging.consumer import (
    ConsumerRunner,
    HandlerRegistry,
    Incoming,
    NotYet,
    Outcome,
    PermanentError,
    RetryPolicy,
)
from pizzeria.messaging.deadletters import DeadLetterStore, as_record
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.tables import inbox, outbox
from pizzeria.messaging.uow import UnitOfWork
from tests.fakes import InMemoryBroker, InMemoryConsumer
from tests.support.polling import eventually

GROUP = "unittest-consumer"
DLQ = f"{GROUP}.dlq"
SOURCE = "/pizzeria/unittest"
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)


class ThingHappened(Message, context="unittest_consumer", key="thing_id"):
    """What the runner under test consumes."""

    thing_id: UUID
    label: str


class CountThing(Message, context="unittest_consumer", kind="command", key="thing_id"):
    """The handler's effect: one outbox row per handled message."""

    thing_id: UUID
    label: str


class OrderThingHappened(Message, context="unittest_consumer", key="order_id"):
    """A message about an order: log lines written while it is handled name the order."""

    order_id: UUID


class NobodyListens(Message, context="unittest_consumer"):
    """A type on the same topic that no handler takes."""

    n: int


TOPIC = ThingHappened.topic()
EFFECTS = CountThing.topic()


class Handler:
    """Emits its effect, then fails for the first `fail_times` calls with `error`."""

    def __init__(self, fail_times: int = 0, error: Exception | None = None) -> None:
        self.fail_times = fail_times
        self.error = error or RuntimeError("boom")
        self.calls = 0
        self.seen: list[tuple[str | None, str | None]] = []
        self.emitted: list[Envelope] = []

    async def __call__(self, message: ThingHappened, envelope: Envelope, uow: UnitOfWork) -> None:
        self.calls += 1
        self.seen.append((context.correlation_id.get(), context.causation_id.get()))
        self.emitted.append(uow.emit(CountThing(thing_id=message.thing_id, label=message.label)))
        if self.calls <= self.fail_times:
            raise self.error


@pytest.fixture
async def topics(broker: InMemoryBroker) -> None:
    await broker.create_topics([TopicSpec(TOPIC, partitions=3), TopicSpec(DLQ, partitions=1)])


def as_batch_handler(handler: Handler) -> Any:
    """The same handler, registered for runs of messages: it acts on each in its own context."""

    async def handle(items: list[Incoming], uow: UnitOfWork) -> None:
        for item in items:
            with item.handling():
                await handler(item.message, item.envelope, uow)

    return handle


@pytest.fixture(params=["per-message", "batch"])
def make_runner(
    request: pytest.FixtureRequest, db: Database, broker: InMemoryBroker, topics: None
) -> Callable[[Handler], ConsumerRunner]:
    """Runners whose handler takes one message at a time, or runs of them: every test here
    holds for both."""

    def uow() -> UnitOfWork:
        return UnitOfWork(db, source=SOURCE)

    def make(handler: Handler, retry: RetryPolicy = FAST) -> ConsumerRunner:
        registry = HandlerRegistry()
        if request.param == "batch":
            registry.on_batch(ThingHappened)(as_batch_handler(handler))
        else:
            registry.add(ThingHappened, handler)
        return ConsumerRunner(
            group=GROUP,
            handlers=registry,
            broker=broker,
            uow_factory=uow,
            dead_letters=DeadLetterStore(db, uow),
            retry=retry,
        )

    return make


@pytest.fixture
def store(db: Database) -> DeadLetterStore:
    return DeadLetterStore(db, lambda: UnitOfWork(db, source=SOURCE))


def thing(label: str = "a", thing_id: UUID | None = None) -> ThingHappened:
    return ThingHappened(thing_id=thing_id or uuid4(), label=label)


async def publish(broker: InMemoryBroker, *items: Message | OutgoingMessage) -> list[Record]:
    """Publish messages (enveloped) or raw records; returns the records they became."""
    before = {(r.topic, r.partition, r.offset) for r in broker.records(TOPIC)}
    await broker.publish(
        [
            item if isinstance(item, OutgoingMessage) else Envelope.wrap(item, source=SOURCE).to_outgoing(TOPIC)
            for item in items
        ]
    )
    return [r for r in broker.records(TOPIC) if (r.topic, r.partition, r.offset) not in before]


async def rows(db: Database, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    async with db.read() as conn:
        result = await conn.execute(sa.select(table).where(*where))
        return [dict(r._mapping) for r in result.all()]


async def effects(db: Database) -> list[str]:
    """Labels of the effects committed so far."""
    found = await rows(db, outbox, outbox.c.topic == EFFECTS)
    return sorted(orjson.loads(r["payload"])["label"] for r in found)


def metric(name: str) -> float:
    return METRICS.get_sample_value(name, {"group": GROUP}) or 0.0


# -- effects happen once ---------------------------------------------------------------------


async def test_a_message_is_handled_and_its_effect_committed(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    handler = Handler()
    [record] = await publish(broker, thing("hello"))
    assert await make_runner(handler).process(record) is Outcome.PROCESSED
    assert await effects(db) == ["hello"]
    assert len(await rows(db, inbox, inbox.c.group_id == GROUP)) == 1


async def test_the_same_record_twice_has_one_effect(make_runner: Any, broker: InMemoryBroker, db: Database) -> None:
    handler = Handler()
    runner = make_runner(handler)
    [record] = await publish(broker, thing("once"))
    assert await runner.process(record) is Outcome.PROCESSED
    assert await runner.process(record) is Outcome.DUPLICATE
    assert handler.calls == 1
    assert await effects(db) == ["once"]


async def test_redelivery_after_a_close_without_commit_has_no_second_effect(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    await publish(broker, thing("x"), thing("y"), thing("z"))
    runner = make_runner(Handler())
    first = broker.consumer(GROUP, [TOPIC])
    await first.start()
    offsets = await runner.process_batch(await first.fetch(10, timeout=0))
    await first.close()  # crashed before committing the offsets

    second = broker.consumer(GROUP, [TOPIC])
    await second.start()
    again = await second.fetch(10, timeout=0)
    assert len(again) == 3
    assert await runner.process_batch(again) == offsets
    await second.commit(offsets)
    await second.close()
    assert await effects(db) == ["x", "y", "z"]
    assert broker.committed(GROUP) == {tp: end for tp, end in broker.end_offsets(TOPIC).items() if end}


# -- retries ---------------------------------------------------------------------------------


async def test_a_transient_failure_is_retried_until_it_succeeds(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    handler = Handler(fail_times=2)
    retries_before = metric("pizzeria_consumer_retries_total")
    [record] = await publish(broker, thing("third time lucky"))
    assert await make_runner(handler).process(record) is Outcome.PROCESSED
    assert handler.calls == 3
    assert metric("pizzeria_consumer_retries_total") - retries_before == 2
    assert await effects(db) == ["third time lucky"]  # the failed attempts were rolled back
    assert await rows(db, outbox, outbox.c.topic == DLQ) == []


async def test_a_handler_that_always_fails_ends_as_a_dead_letter(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=100)
    [record] = await publish(broker, thing("doomed"))
    envelope = Envelope.from_record(record)
    assert await make_runner(handler).process(record) is Outcome.DEAD_LETTERED
    assert handler.calls == FAST.max_attempts
    assert await effects(db) == []

    [dead] = await store.recent()
    assert dead["status"] == "dead"
    assert dead["attempts"] == FAST.max_attempts
    assert dead["error"] == "RuntimeError: boom"
    assert (dead["group_id"], dead["message_id"], dead["message_type"]) == (
        GROUP,
        envelope.id,
        envelope.type,
    )
    assert (dead["topic"], dead["partition"], dead["offset"], dead["key"]) == (
        record.topic,
        record.partition,
        record.offset,
        record.key,
    )
    assert dead["payload"] == record.value
    assert orjson.loads(dead["headers"]) == dict(record.headers)

    [published] = await rows(db, outbox, outbox.c.topic == DLQ)
    assert (published["payload"], published["key"]) == (record.value, record.key)
    headers = orjson.loads(published["headers"])
    assert {k: v for k, v in headers.items() if not k.startswith("dlq_")} == dict(record.headers)
    assert headers["dlq_id"] == dead["id"]
    assert headers["dlq_group"] == GROUP
    assert headers["dlq_error"] == "RuntimeError: boom"
    assert headers["dlq_attempts"] == str(FAST.max_attempts)
    assert (
        headers["dlq_original_topic"],
        headers["dlq_original_partition"],
        headers["dlq_original_offset"],
    ) == (TOPIC, str(record.partition), str(record.offset))
    assert "dlq_failed_at" in headers


async def test_a_redelivered_dead_letter_is_stored_once(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    runner = make_runner(Handler(fail_times=100))
    [record] = await publish(broker, thing())
    assert await runner.process(record) is Outcome.DEAD_LETTERED
    assert await runner.process(record) is Outcome.DEAD_LETTERED
    assert len(await store.recent()) == 1
    assert len(await rows(db, outbox, outbox.c.topic == DLQ)) == 1


# -- poison messages go at once --------------------------------------------------------------


def database_outage() -> sa.exc.OperationalError:
    """What the driver raises while the database cannot be reached (kit.db.is_transient_error)."""
    return sa.exc.OperationalError("INSERT ...", {}, ConnectionRefusedError("connection refused"))


async def test_a_database_outage_is_waited_out_past_the_attempts_not_dead_lettered(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=FAST.max_attempts + 3, error=database_outage())
    [record] = await publish(broker, thing("after the outage"))
    patient = dataclasses.replace(FAST, transient_patience=60.0)
    assert await make_runner(handler, patient).process(record) is Outcome.PROCESSED
    assert handler.calls == FAST.max_attempts + 4
    assert await effects(db) == ["after the outage"]
    assert await store.recent() == []


async def test_an_outage_longer_than_the_patience_ends_as_a_dead_letter(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=100, error=database_outage())
    [record] = await publish(broker, thing("outage for good"))
    impatient = dataclasses.replace(FAST, transient_patience=0.0)
    assert await make_runner(handler, impatient).process(record) is Outcome.DEAD_LETTERED
    assert handler.calls == FAST.max_attempts
    [dead] = await store.recent()
    assert dead["error"].startswith("OperationalError:")


def test_only_a_transient_failure_is_retried_past_the_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, transient_patience=30.0)
    assert not policy.gives_up(2, RuntimeError("boom"), 0.0)
    assert policy.gives_up(3, RuntimeError("boom"), 0.0)
    assert not policy.gives_up(3, database_outage(), 29.0)
    assert policy.gives_up(3, database_outage(), 30.0)
    assert not policy.gives_up(2, database_outage(), 99.0), "never before the attempts are spent"
    assert not policy.gives_up(3, NotYet("no recipe yet"), 29.0), "what a message needs may be on its way"
    assert policy.gives_up(3, NotYet("no recipe yet"), 30.0)


def test_the_backoff_stays_a_number_however_many_attempts_a_long_patience_takes() -> None:
    policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.01)
    assert 0.005 <= policy.delay(5_000) <= 0.01


async def test_a_message_that_came_before_what_it_needs_waits_for_it(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=FAST.max_attempts + 2, error=NotYet("the recipe is on its way"))
    [record] = await publish(broker, thing("once it came"))
    patient = dataclasses.replace(FAST, transient_patience=60.0)
    assert await make_runner(handler, patient).process(record) is Outcome.PROCESSED
    assert handler.calls == FAST.max_attempts + 3
    assert await effects(db) == ["once it came"]
    assert await store.recent() == []


async def test_a_record_that_is_not_a_cloudevent_is_dead_lettered_at_once(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler()
    [record] = await publish(
        broker,
        OutgoingMessage(
            topic=TOPIC,
            key="k",
            value=b'{"hello": 1}',
            headers={"content-type": "application/json"},
        ),
    )
    assert await make_runner(handler).process(record) is Outcome.DEAD_LETTERED
    assert handler.calls == 0
    [dead] = await store.recent()
    assert dead["attempts"] == 1
    assert dead["error"].startswith("malformed:")
    assert dead["message_id"] is None
    [published] = await rows(db, outbox, outbox.c.topic == DLQ)
    assert orjson.loads(published["headers"])["content-type"] == "application/json"


async def test_data_that_fails_the_schema_is_dead_lettered_at_once(
    make_runner: Any, broker: InMemoryBroker, store: DeadLetterStore
) -> None:
    handler = Handler()
    bad = Envelope(
        id=new_id(),
        source=SOURCE,
        type=ThingHappened.type_name(),
        subject="k",
        data=b'{"thing_id": "not-a-uuid"}',
    )
    [record] = await publish(broker, bad.to_outgoing(TOPIC))
    assert await make_runner(handler).process(record) is Outcome.DEAD_LETTERED
    assert handler.calls == 0
    [dead] = await store.recent()
    assert (dead["attempts"], dead["message_id"]) == (1, bad.id)
    assert dead["error"].startswith("schema:")
    assert "thing_id" in dead["error"]


async def test_a_permanent_error_is_dead_lettered_without_retries(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=100, error=PermanentError("order does not exist"))
    [record] = await publish(broker, thing())
    assert await make_runner(handler).process(record) is Outcome.DEAD_LETTERED
    assert handler.calls == 1
    [dead] = await store.recent()
    assert (dead["attempts"], dead["error"]) == (1, "permanent: order does not exist")
    assert await effects(db) == []


async def test_unknown_message_types_are_ignored(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler()
    [record] = await publish(broker, NobodyListens(n=1))
    assert await make_runner(handler).process(record) is Outcome.IGNORED
    assert handler.calls == 0
    assert await store.recent() == []
    assert await rows(db, inbox) == []


async def test_the_next_record_is_processed_after_a_dead_letter(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    key = str(uuid4())  # one key, one partition: the poison record sits between good ones
    records = await publish(
        broker,
        thing("before", UUID(key)),
        OutgoingMessage(topic=TOPIC, key=key, value=b"garbage", headers={}),
        thing("after", UUID(key)),
    )
    assert len({r.partition for r in records}) == 1
    offsets = await make_runner(Handler()).process_batch(records)
    assert offsets == {(TOPIC, records[0].partition): records[-1].offset + 1}
    assert await effects(db) == ["after", "before"]
    assert [d["offset"] for d in await store.recent()] == [records[1].offset]


async def test_process_batch_returns_the_next_offset_of_every_partition(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    records = await publish(broker, *(thing(str(n)) for n in range(12)))
    offsets = await make_runner(Handler()).process_batch(records)
    assert offsets == {tp: end for tp, end in broker.end_offsets(TOPIC).items() if end}
    assert len(await effects(db)) == 12


async def test_a_run_handled_together_times_each_handled_message_of_each_type(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    def timed(type_name: str) -> tuple[float, float]:
        labels = {"group": GROUP, "type": type_name}
        count = METRICS.get_sample_value("pizzeria_consumer_handler_duration_seconds_count", labels) or 0.0
        total = METRICS.get_sample_value("pizzeria_consumer_handler_duration_seconds_sum", labels) or 0.0
        return count, total

    handled, ignored = ThingHappened.type_name(), NobodyListens.type_name()
    before, ignored_before = timed(handled), timed(ignored)
    processed_before = METRICS.get_sample_value(
        "pizzeria_consumer_messages_total", {"group": GROUP, "outcome": "processed"}
    )
    records = await publish(broker, *(thing(str(n)) for n in range(7)), NobodyListens(n=1))
    await make_runner(Handler()).process_batch(records)
    after = timed(handled)
    assert after[0] - before[0] == 7, "one observation per handled message"
    assert after[1] > before[1]
    assert timed(ignored) == ignored_before, "a message no handler takes is not timed"
    processed = METRICS.get_sample_value("pizzeria_consumer_messages_total", {"group": GROUP, "outcome": "processed"})
    assert (processed or 0.0) - (processed_before or 0.0) == 7
    assert len(await effects(db)) == 7


# -- replay ----------------------------------------------------------------------------------


async def test_replay_after_the_handler_is_fixed_marks_the_dead_letter_replayed(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=FAST.max_attempts)
    runner = make_runner(handler)
    [record] = await publish(broker, thing("second chance"))
    assert await runner.process(record) is Outcome.DEAD_LETTERED
    [dead] = await store.recent()
    await act_on_dead_letter(store, store.uow_factory, "unit", dead["id"], "replay", actor="tester")

    # The handler now works (its failures are used up): replay the stored record.
    replayed = as_record(dead)
    assert (replayed.value, dict(replayed.headers)) == (record.value, dict(record.headers))
    assert await runner.process(replayed, replay_of=dead["id"]) is Outcome.PROCESSED
    after = await store.get(dead["id"])
    assert after is not None
    assert after["status"] == "replayed"
    assert await effects(db) == ["second chance"]
    assert len(await store.recent()) == 1


async def test_a_replay_of_a_type_the_group_no_longer_takes_is_dead_again_not_left_waiting(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    handler = Handler(fail_times=FAST.max_attempts)
    [record] = await publish(broker, thing("handler gone"))
    assert await make_runner(handler).process(record) is Outcome.DEAD_LETTERED
    [dead] = await store.recent()
    await act_on_dead_letter(store, store.uow_factory, "unit", dead["id"], "replay", actor="tester")

    # A new version of the service no longer handles the type (a handler removed).
    without = ConsumerRunner(
        group=GROUP,
        handlers=HandlerRegistry(),
        broker=broker,
        uow_factory=store.uow_factory,
        dead_letters=store,
        retry=FAST,
    )
    assert await without.process(record) is Outcome.IGNORED  # as a record, as ever
    assert await without.process(as_record(dead), replay_of=dead["id"]) is Outcome.DEAD_LETTERED
    after = await store.get(dead["id"])
    assert after is not None
    assert after["status"] == "dead", "else every look would replay it again, for ever"
    assert "no longer takes" in after["error"]
    assert await effects(db) == []


async def test_a_replay_that_fails_again_returns_to_dead_with_attempts_added(
    make_runner: Any, broker: InMemoryBroker, db: Database, store: DeadLetterStore
) -> None:
    runner = make_runner(Handler(fail_times=100))
    [record] = await publish(broker, thing())
    await runner.process(record)
    [dead] = await store.recent()
    await act_on_dead_letter(store, store.uow_factory, "unit", dead["id"], "replay", actor="tester")
    assert await runner.process(as_record(dead), replay_of=dead["id"]) is Outcome.DEAD_LETTERED
    after = await store.get(dead["id"])
    assert after is not None
    assert (after["status"], after["attempts"]) == ("dead", 2 * FAST.max_attempts)
    assert len(await store.recent()) == 1
    assert len(await rows(db, outbox, outbox.c.topic == DLQ)) == 1


# -- context and the run loop ----------------------------------------------------------------


async def test_handlers_run_in_the_message_context_and_emit_within_its_conversation(
    make_runner: Any, broker: InMemoryBroker
) -> None:
    handler = Handler()
    [record] = await publish(broker, thing())
    consumed = Envelope.from_record(record)
    await make_runner(handler).process(record)
    assert handler.seen == [(consumed.correlationid, consumed.id)]
    [emitted] = handler.emitted
    assert (emitted.correlationid, emitted.causationid) == (consumed.correlationid, consumed.id)
    assert context.correlation_id.get() is None
    assert context.causation_id.get() is None


@pytest.mark.parametrize("sampled", [True, False])
def test_a_handled_message_is_a_consumer_span_in_its_senders_trace(sampled: bool) -> None:
    """Sampled: a consumer span, the child of the sender's, with what names the message. Not
    sampled (nine in ten at 0.1): nothing exported, and what is emitted while it is handled
    keeps the trace id and the not-sampled flag, so the next consumer follows suit."""
    sender = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-" + ("01" if sampled else "00")
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing("unit", Settings(), exporter)
    try:
        about_order = dataclasses.replace(
            Envelope.wrap(OrderThingHappened(order_id=uuid4()), source=SOURCE), traceparent=sender
        )
        with Incoming(None, about_order, GROUP).handling():
            emitted = Envelope.wrap(thing(), source=SOURCE)
        provider.force_flush()
    finally:
        tracing.shutdown_tracing()
        tracing._Current.provider, tracing._Current.tracer = None, trace.NoOpTracer()
    assert emitted.traceparent is not None
    assert emitted.traceparent[:36] == sender[:36]
    assert emitted.traceparent[36:52] != sender[36:52]
    if not sampled:
        assert emitted.traceparent.endswith("-00")
        assert exporter.get_finished_spans() == ()
        return
    [span] = [tracing.as_dict(s) for s in exporter.get_finished_spans()]
    assert emitted.traceparent == f"00-{span['trace_id']}-{span['span_id']}-01"
    assert (span["name"], span["kind"], span["parent_id"]) == (
        f"{GROUP} process {about_order.type}",
        "consumer",
        sender[36:52],
    )
    assert span["attributes"] == {
        "messaging.consumer.group.name": GROUP,
        "messaging.message.id": about_order.id,
        "cloudevents.event_type": about_order.type,
        "messaging.operation.type": "process",
        "cloudevents.event_subject": about_order.subject,
    }


def test_log_lines_while_a_message_about_an_order_is_handled_name_the_order_and_then_no_longer() -> None:
    about_order = Envelope.wrap(OrderThingHappened(order_id=uuid4()), source=SOURCE)
    bound = structlog.contextvars.get_contextvars
    with structlog.contextvars.bound_contextvars(order_id="the request's"):
        with Incoming(None, about_order, GROUP).handling():
            assert bound()["order_id"] == about_order.subject
        assert bound()["order_id"] == "the request's"
    assert "order_id" not in bound()
    with Incoming(None, Envelope.wrap(thing(), source=SOURCE), GROUP).handling():
        assert "order_id" not in bound()  # a message about something else names no order


async def test_run_processes_and_commits_until_cancelled(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    await publish(broker, thing("1"), thing("2"), thing("3"))
    runner = make_runner(Handler())
    task = asyncio.create_task(runner.run())
    expected = {tp: end for tp, end in broker.end_offsets(TOPIC).items() if end}
    await eventually(lambda: broker.committed(GROUP) == expected, "offsets never committed", 10, every=0.005)
    assert runner.healthy
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await effects(db) == ["1", "2", "3"]
    assert broker.members(GROUP) == []  # the member left the group
    assert not runner.healthy


# -- a partition's records in one transaction --------------------------------------------------


@contextlib.contextmanager
def counting_commits() -> Iterator[list[int]]:
    """Counts the units of work committed inside the block (the one number in the list)."""
    counted = [0]
    original = UnitOfWork.commit

    async def counting(self: UnitOfWork) -> None:
        counted[0] += 1
        await original(self)

    UnitOfWork.commit = counting  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        UnitOfWork.commit = original  # type: ignore[method-assign]


@pytest.mark.parametrize(("linger", "transactions"), [(0.0, 2), (0.05, 1)])
async def test_records_arriving_within_the_linger_join_the_run(
    make_runner: Any,
    broker: InMemoryBroker,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    linger: float,
    transactions: int,
) -> None:
    key = uuid4()
    await publish(broker, thing("1", thing_id=key))
    behind = [thing("2", thing_id=key), thing("3", thing_id=key)]
    fetch = InMemoryConsumer.fetch

    async def then_more_arrive(self: InMemoryConsumer, max_records: int, timeout: float) -> list[Record]:
        got = await fetch(self, max_records, timeout)
        if got and behind:  # two more right behind the first
            await publish(broker, *behind)
            behind.clear()
        return got

    monkeypatch.setattr(InMemoryConsumer, "fetch", then_more_arrive)
    runner = make_runner(Handler())
    runner.linger = linger
    with counting_commits() as committed:
        task = asyncio.create_task(runner.run())
        await eventually(lambda: sum(broker.committed(GROUP).values()) >= 3, "offsets never committed", 10, every=0.005)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await effects(db) == ["1", "2", "3"]
    assert committed[0] == transactions


async def same_partition(broker: InMemoryBroker, *labels: str) -> list[Record]:
    key = uuid4()  # one key: one partition, in order
    return await publish(broker, *(thing(label, thing_id=key) for label in labels))


async def test_a_batch_of_one_partition_commits_together(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    handler = Handler()
    records = await same_partition(broker, "a", "b", "c")
    with counting_commits() as commits:
        await make_runner(handler).process_batch(records)
    assert commits == [1]
    assert await effects(db) == ["a", "b", "c"]
    assert len(await rows(db, inbox, inbox.c.group_id == GROUP)) == 3
    # Each effect is caused by its own message, even inside one transaction.
    assert [e.causationid for e in handler.emitted] == [r.headers["ce_id"] for r in records]


async def test_a_fetch_across_partitions_commits_together_in_each_partitions_order(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    first, second = uuid4(), uuid4()
    records: list[Record] = []
    while len({r.partition for r in records}) < 2:  # two keys that land on different partitions
        second = uuid4()
        records = await publish(
            broker, thing("a1", first), thing("b1", second), thing("a2", first), thing("b2", second)
        )
    handler = Handler()
    with counting_commits() as commits:
        offsets = await make_runner(handler).process_batch(records)
    assert commits == [1]
    seen = [orjson.loads(e.data)["label"] for e in handler.emitted]
    assert [x for x in seen if x.startswith("a")] == ["a1", "a2"]
    assert [x for x in seen if x.startswith("b")] == ["b1", "b2"]
    assert offsets == {
        (TOPIC, p): 1 + max(r.offset for r in records if r.partition == p) for p in {r.partition for r in records}
    }


async def test_a_poison_record_on_one_partition_leaves_the_fetch_to_each_partition(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    good = await same_partition(broker, "kept")
    other: list[Record] = []
    while not other or other[0].partition == good[0].partition:
        other = await publish(broker, OutgoingMessage(topic=TOPIC, key=str(uuid4()), value=b"{}", headers={}))
    await make_runner(Handler()).process_batch([*good, other[0]])
    assert await effects(db) == ["kept"]
    [dead] = await rows(db, inbox.metadata.tables["dead_letters"])
    assert (dead["partition"], dead["offset"]) == (other[0].partition, other[0].offset)


async def test_a_failure_inside_a_batch_falls_back_to_one_by_one_without_double_effects(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    class FailsOnB(Handler):
        async def __call__(self, message: ThingHappened, envelope: Envelope, uow: UnitOfWork) -> None:
            await super().__call__(message, envelope, uow)
            if message.label == "b":
                raise PermanentError("b can never work")

    records = await same_partition(broker, "a", "b", "c")
    offsets = await make_runner(FailsOnB()).process_batch(records)
    assert await effects(db) == ["a", "c"], "the batch rolled back; a and c then committed once each"
    [dead] = await rows(db, inbox.metadata.tables["dead_letters"])
    assert dead["offset"] == records[1].offset
    assert offsets == {(TOPIC, records[0].partition): records[-1].offset + 1}


async def test_a_poison_record_in_a_batch_does_not_hold_back_the_others(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    key = str(uuid4())
    good = await same_partition(broker, "first")
    poison = await publish(broker, OutgoingMessage(topic=TOPIC, key=good[0].key, value=b"{}", headers={"ce_id": key}))
    assert poison[0].partition == good[0].partition
    await make_runner(Handler()).process_batch([*good, *poison])
    assert await effects(db) == ["first"]
    assert len(await rows(db, inbox.metadata.tables["dead_letters"])) == 1


async def test_the_same_message_twice_in_one_batch_has_one_effect(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    handler = Handler()
    [record] = await same_partition(broker, "twice")
    copy = Record(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset + 1,
        value=record.value,
        key=record.key,
        headers=record.headers,
        timestamp_ms=record.timestamp_ms,
    )
    await make_runner(handler).process_batch([record, copy])
    assert handler.calls == 1
    assert await effects(db) == ["twice"]


async def test_a_batch_whose_commit_fails_is_handled_again_one_by_one_with_one_effect_each(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    records = await same_partition(broker, "a", "b", "c")
    original = UnitOfWork.commit
    failed = 0

    async def first_commit_fails(self: UnitOfWork) -> None:
        nonlocal failed
        if not failed:
            failed += 1
            raise RuntimeError("the database went away at commit")
        await original(self)

    UnitOfWork.commit = first_commit_fails  # type: ignore[method-assign]
    try:
        offsets = await make_runner(Handler()).process_batch(records)
    finally:
        UnitOfWork.commit = original  # type: ignore[method-assign]
    assert failed == 1
    assert await effects(db) == ["a", "b", "c"]
    assert len(await rows(db, inbox, inbox.c.group_id == GROUP)) == 3
    assert offsets == {(TOPIC, records[0].partition): records[-1].offset + 1}


async def test_a_crash_between_the_batch_commit_and_the_offset_commit_has_no_second_effect(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    records = await same_partition(broker, "a", "b", "c")
    await make_runner(Handler()).process_batch(records)  # committed; the offsets never were
    second = Handler()
    await make_runner(second).process_batch(records)  # the partition's next owner reads them again
    assert second.calls == 0, "every message was found in the inbox"
    assert await effects(db) == ["a", "b", "c"]


async def test_two_messages_for_one_aggregate_in_one_batch_are_handled_in_their_order(
    make_runner: Any, broker: InMemoryBroker, db: Database
) -> None:
    class Order(Handler):
        def __init__(self) -> None:
            super().__init__()
            self.labels: list[str] = []

        async def __call__(self, message: ThingHappened, envelope: Envelope, uow: UnitOfWork) -> None:
            self.labels.append(message.label)
            await super().__call__(message, envelope, uow)

    handler = Order()
    records = await same_partition(broker, "first", "second", "third")
    assert len({r.key for r in records}) == 1
    await make_runner(handler).process_batch(records)
    assert handler.labels == ["first", "second", "third"]
