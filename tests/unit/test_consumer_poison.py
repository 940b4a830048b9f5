"""No record stops a consumer group: decoding an envelope is total (a CloudEvent or
`MalformedMessage`, nothing else), whatever a record holds ends handled, ignored or a dead letter
with the reason; a known type of another schema version is a dead letter, not ignored; and a
group held up on one record shows as stuck (readiness, `pizzeria_consumer_stuck`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY as METRICS

from pizzeria.kit.db import Database
from pizzeria.messaging.broker import OutgoingMessage, Record, TopicSpec
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, Incoming, Outcome
from pizzeria.messaging.deadletters import DeadLetterStore
from pizzeria.messaging.envelope import Envelope, MalformedMessage
from pizzeria.messaging.uow import UnitOfWork
from tests.fakes import FakeClock, InMemoryBroker
from tests.support.polling import eventually
from tests.support.records import SOURCE, ProbeHappened, ProbeIgnored

TOPIC = ProbeHappened.topic()
GROUP = "unittest-poison"
VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(),
    st.none(),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=3),
    st.binary(max_size=10),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-01-01T00:00:00"]),
)
NAMES = st.one_of(
    st.sampled_from(
        ["ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "ce_subject", "ce_traceparent", "ce_causationid"]
    ),
    st.text(max_size=10),
)


def good_headers() -> dict[str, Any]:
    return dict(Envelope.wrap(ProbeHappened(probe_id=uuid4(), label="x"), source=SOURCE).headers())


@settings(max_examples=1000)
@given(changes=st.dictionaries(NAMES, VALUES, max_size=5), value=st.binary(max_size=20))
def test_an_envelope_is_decoded_or_malformed_never_anything_else(changes: dict[str, Any], value: bytes) -> None:
    headers = {**good_headers(), **changes}
    try:
        envelope = Envelope.from_headers(headers, value)
    except MalformedMessage:
        return
    assert envelope.time.utcoffset() is not None
    for text in (envelope.id, envelope.type, envelope.source, envelope.subject or ""):
        assert isinstance(text, str)
        assert "\x00" not in text


@pytest.mark.parametrize(
    "time_value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", 1767225600, ["2026"], "soon"]
)
def test_a_time_that_overflows_or_is_not_text_is_malformed(time_value: object) -> None:
    with pytest.raises(MalformedMessage, match="ce_time"):
        Envelope.from_headers({**good_headers(), "ce_time": time_value}, b"{}")


def test_an_invalid_traceparent_starts_a_new_trace_rather_than_failing() -> None:
    envelope = Envelope.from_headers({**good_headers(), "ce_traceparent": "00-zz-\x00-01"}, b"{}")
    assert envelope.traceparent is None


# -- through the runner ------------------------------------------------------------------------


class Probes:
    """The handler under test: notes each probe, or waits for `release` when told to."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.hold = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, message: ProbeHappened, envelope: Envelope, uow: UnitOfWork) -> None:
        self.entered.set()
        if self.hold:
            await self.release.wait()
        self.seen.append(message.label)


@pytest.fixture
async def topics(broker: InMemoryBroker) -> None:
    await broker.create_topics([TopicSpec(TOPIC, partitions=3), TopicSpec(f"{GROUP}.dlq", partitions=1)])


def runner_of(
    db: Database, broker: InMemoryBroker, probes: Probes, *, clock: FakeClock | None = None, store: Any = None
) -> ConsumerRunner:
    def uow() -> UnitOfWork:
        return UnitOfWork(db, source=SOURCE)

    registry = HandlerRegistry()
    registry.add(ProbeHappened, probes)
    return ConsumerRunner(
        group=GROUP,
        handlers=registry,
        broker=broker,
        uow_factory=uow,
        dead_letters=store or DeadLetterStore(db, uow),
        stuck_after=60.0,
        clock=clock or time.monotonic,
    )


async def publish(broker: InMemoryBroker, headers: dict[str, Any], value: bytes = b"{}") -> Record:
    await broker.publish([OutgoingMessage(topic=TOPIC, key="k", value=value, headers=headers)])
    return [r for r in broker.records(TOPIC) if r.partition == broker.records(TOPIC)[-1].partition][-1]


@pytest.mark.usefixtures("topics")
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ce_time": "9999-12-31T23:59:59-23:59"}, "ce_time"),
        ({"ce_time": 20260101}, "ce_time"),
        ({"ce_id": "x" * 65}, "ce_id"),
        ({"ce_subject": "order\x00"}, "ce_subject"),
        ({"ce_type": ProbeHappened.type_name().replace(".v1", ".v2")}, "unknown schema version"),
    ],
)
async def test_a_poison_record_is_dead_lettered_with_its_reason_and_the_next_one_handled(
    db: Database, broker: InMemoryBroker, change: dict[str, Any], reason: str
) -> None:
    probes = Probes()
    runner = runner_of(db, broker, probes)
    first = Envelope.wrap(ProbeHappened(probe_id=uuid4(), label="before"), source=SOURCE)
    bad = Envelope.wrap(ProbeHappened(probe_id=uuid4(), label="poison"), source=SOURCE)
    after = Envelope.wrap(ProbeHappened(probe_id=uuid4(), label="after"), source=SOURCE)
    await broker.publish(
        [
            OutgoingMessage(TOPIC, first.data, "k", first.headers()),
            OutgoingMessage(TOPIC, bad.data, "k", {**bad.headers(), **change}),
            OutgoingMessage(TOPIC, after.data, "k", after.headers()),
        ]
    )
    records = broker.records(TOPIC)
    offsets = await asyncio.wait_for(runner.process_batch(records), 10)
    assert offsets == {(TOPIC, records[0].partition): records[-1].offset + 1}
    assert probes.seen == ["before", "after"]
    [dead] = await runner.dead_letters.recent()
    assert reason in dead["error"]
    assert dead["offset"] == records[1].offset


@pytest.mark.usefixtures("topics")
async def test_a_record_with_defects_is_dead_lettered_with_them(db: Database, broker: InMemoryBroker) -> None:
    runner = runner_of(db, broker, Probes())
    envelope = Envelope.wrap(ProbeHappened(probe_id=uuid4(), label="x"), source=SOURCE)
    record = Record(TOPIC, 0, 0, envelope.data, "k\\xff", envelope.headers(), 0, ("the key is not UTF-8",))
    assert await runner.process(record) is Outcome.DEAD_LETTERED
    [dead] = await runner.dead_letters.recent()
    assert dead["error"] == "malformed: the key is not UTF-8"


@pytest.mark.usefixtures("topics")
async def test_a_dead_letter_keeps_what_no_column_could_hold(db: Database, broker: InMemoryBroker) -> None:
    runner = runner_of(db, broker, Probes())
    headers = {"ce_id": "id\x00" + "y" * 100, "x-\x00": "\x00", "ce_type": "t" * 300}
    record = Record(TOPIC, 0, 7, b"\x00\xff", "k\x00" * 200, headers, 0)
    assert await runner.process(record) is Outcome.DEAD_LETTERED
    [dead] = await runner.dead_letters.recent()
    assert "\x00" not in "".join(str(v) for v in dead.values() if isinstance(v, str))
    assert len(dead["message_id"]) <= 64
    assert len(dead["key"]) <= 255
    assert len(dead["message_type"]) <= 255


@pytest.mark.usefixtures("topics")
async def test_types_the_group_does_not_take_are_still_ignored(db: Database, broker: InMemoryBroker) -> None:
    runner = runner_of(db, broker, Probes())
    ignored = Envelope.wrap(ProbeIgnored(probe_id=uuid4()), source=SOURCE)
    other = {**ignored.headers(), "ce_type": "pizzeria.elsewhere.Something.v7"}
    for headers in (ignored.headers(), other):
        assert await runner.process(await publish(broker, headers, ignored.data)) is Outcome.IGNORED
    assert await runner.dead_letters.recent() == []


@pytest.mark.usefixtures("topics")
async def test_a_group_that_takes_every_type_takes_other_versions_too(db: Database, broker: InMemoryBroker) -> None:
    taken: list[str] = []

    async def record_all(items: list[Incoming], uow: UnitOfWork) -> None:
        taken.extend(item.envelope.type for item in items)

    runner = runner_of(db, broker, Probes())
    runner.handlers.on_any_batch(record_all)  # type: ignore[arg-type]
    envelope = Envelope.wrap(ProbeIgnored(probe_id=uuid4()), source=SOURCE)
    v9 = {**envelope.headers(), "ce_type": ProbeHappened.type_name().replace(".v1", ".v9")}
    assert await runner.process(await publish(broker, v9, envelope.data)) is Outcome.PROCESSED
    assert taken == [v9["ce_type"]]


# -- a group held up ---------------------------------------------------------------------------


def stuck_gauge() -> float | None:
    return METRICS.get_sample_value("pizzeria_consumer_stuck", {"group": GROUP})


@pytest.mark.usefixtures("topics")
async def test_a_group_held_up_on_one_record_is_stuck_until_it_moves_on(db: Database, broker: InMemoryBroker) -> None:
    clock = FakeClock()
    probes = Probes()
    probes.hold = True
    runner = runner_of(db, broker, probes, clock=clock)
    envelope = Envelope.wrap(ProbeHappened(probe_id=uuid4(), label="slow"), source=SOURCE)
    await publish(broker, envelope.headers(), envelope.data)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(probes.entered.wait(), 10)
        clock.advance(59)
        assert not runner.stuck()
        assert stuck_gauge() == 0.0
        clock.advance(2)
        assert runner.stuck()
        assert stuck_gauge() == 1.0
        probes.release.set()
        await eventually(
            lambda: probes.seen == ["slow"] and not runner.stuck(), "the group never moved on", 10.0, every=0.005
        )
        assert stuck_gauge() == 0.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class BrokenDeadLetters(DeadLetterStore):
    """A store whose database refuses every dead letter (down, or full)."""

    async def add(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the database is not there")


@pytest.mark.usefixtures("topics")
async def test_a_record_that_cannot_even_be_dead_lettered_makes_the_group_stuck(
    db: Database, broker: InMemoryBroker
) -> None:
    clock = FakeClock()
    store = BrokenDeadLetters(db, lambda: UnitOfWork(db, source=SOURCE))
    runner = runner_of(db, broker, Probes(), clock=clock, store=store)
    await publish(broker, {"not": "a cloudevent"})
    task = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: runner._working, "the record was never taken up", 10.0, every=0.005)
        clock.advance(61)
        assert runner.stuck()
        assert stuck_gauge() == 1.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
