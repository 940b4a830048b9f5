"""The fault lab's switches in a service (chassis/faults.py), with its real runtime on a SQLite
database and an in-memory broker: a paused broker backs the outbox up and lets consumers read
nothing, and resuming drains it; a failing consumer group dead-letters its messages and, once
it recovers, a replay goes through; switches are rows every replica and every restart follows;
a crash exits the process as a SIGKILL would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa

from pizzeria.chassis.faults import CRASH_STATUS, FaultChange, FaultSwitches
from pizzeria.chassis.ops import act_on_dead_letter
from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit import failpoints
from pizzeria.kit.db import Database
from pizzeria.kit.errors import NotFound
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import TopicSpec
from pizzeria.messaging.consumer import HandlerRegistry, Outcome
from pizzeria.messaging.deadletters import as_record
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.pausable import BrokerPaused
from pizzeria.messaging.tables import fault_switches
from pizzeria.messaging.uow import UnitOfWork
from tests.fakes import InMemoryBroker
from tests.support.polling import eventually

GROUP = "unittest-faults"


class PieBaked(Message, context="unittest_faults", key="pie_id"):
    """What the service under test emits and consumes."""

    pie_id: UUID


TOPIC = PieBaked.topic()


@pytest.fixture(autouse=True)
def released() -> Iterator[None]:
    yield
    for point in failpoints.held():
        failpoints.hold(point, on=False)


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    broker = InMemoryBroker()
    await broker.start()
    await broker.create_topics([TopicSpec(TOPIC, partitions=1)])
    yield broker
    await broker.close()


def runtime(db: Database, broker: InMemoryBroker) -> ServiceRuntime:
    # Two quick attempts: a failing message becomes a dead letter without a wait.
    settings = Settings.model_validate({"CONSUMER_MAX_ATTEMPTS": "2", "CONSUMER_BACKOFF_INITIAL_MS": "1"})
    return ServiceRuntime(service="bakery", settings=settings, db=db, broker=broker)


async def emit(service: ServiceRuntime) -> None:
    uow: UnitOfWork
    async with service.uow() as uow:
        uow.emit(PieBaked(pie_id=uuid4()))
        await uow.commit()


async def test_a_paused_broker_backs_the_outbox_up_and_it_drains_on_resume(
    db: Database, broker: InMemoryBroker
) -> None:
    service = runtime(db, broker)
    switches = FaultSwitches(service)
    await switches.change(FaultChange(broker_paused=True), actor="admin-1")
    for _ in range(3):
        await emit(service)
    with pytest.raises(BrokerPaused):
        await service.relay.publish_pending()
    assert (await service.relay.backlog())[0] == 3
    assert broker.records(TOPIC) == []

    state = await switches.change(FaultChange(broker_paused=False), actor="admin-1")
    assert state.broker_paused is False
    assert await service.relay.publish_pending() == 3
    assert (await service.relay.backlog())[0] == 0
    assert len(broker.records(TOPIC)) == 3


async def test_a_paused_broker_delivers_nothing_until_it_resumes(db: Database, broker: InMemoryBroker) -> None:
    service = runtime(db, broker)
    switches = FaultSwitches(service)
    await broker.publish([Envelope.wrap(PieBaked(pie_id=uuid4()), source="/t").to_outgoing(TOPIC)])
    consumer = service.broker.consumer(GROUP, [TOPIC])
    await consumer.start()
    try:
        await switches.change(FaultChange(broker_paused=True), actor="admin-1")
        assert await consumer.fetch(10, timeout=0.01) == []
        await switches.change(FaultChange(broker_paused=False), actor="admin-1")
        assert len(await consumer.fetch(10, timeout=1)) == 1
    finally:
        await consumer.close()


async def test_a_failing_consumer_dead_letters_and_recovers(db: Database, broker: InMemoryBroker) -> None:
    service = runtime(db, broker)
    handled: list[UUID] = []
    registry = HandlerRegistry()

    @registry.on(PieBaked)
    async def on_pie(message: PieBaked, _: Envelope, __: UnitOfWork) -> None:
        handled.append(message.pie_id)

    runner = service.subscribe(GROUP, registry)
    switches = FaultSwitches(service)
    state = await switches.change(FaultChange(consumers_failing={GROUP: True}), actor="admin-1")
    assert state.consumers_failing == {GROUP: True}
    pie = PieBaked(pie_id=uuid4())
    await broker.publish([Envelope.wrap(pie, source="/t").to_outgoing(TOPIC)])
    [record] = broker.records(TOPIC)

    assert await runner.process(record) is Outcome.DEAD_LETTERED
    assert handled == []
    [letter] = await service.dead_letters.recent()
    assert letter["attempts"] == 2
    assert "failpoint consume.unittest-faults" in letter["error"]

    await switches.change(FaultChange(consumers_failing={GROUP: False}), actor="admin-1")
    assert await runner.process(as_record(letter), replay_of=letter["id"]) is Outcome.PROCESSED
    assert handled == [pie.pie_id]
    assert (await service.dead_letters.get(letter["id"]) or {})["status"] == "replayed"


async def test_switches_are_rows_every_replica_and_every_restart_follows(db: Database, broker: InMemoryBroker) -> None:
    one, other = runtime(db, broker), runtime(db, InMemoryBroker())
    other.subscribe(GROUP, HandlerRegistry())
    await FaultSwitches(one).change(FaultChange(broker_paused=True), actor="admin-1")

    replica = FaultSwitches(other)
    await replica.refresh()
    assert other.broker.paused
    restarted = FaultSwitches(runtime(db, broker))
    await restarted.refresh()
    assert restarted.state().broker_paused

    await replica.change(FaultChange(broker_paused=False, consumers_failing={GROUP: True}), actor="admin-2")
    await restarted.refresh()
    assert not restarted.runtime.broker.paused
    assert f"consume.{GROUP}" in failpoints.held()
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(fault_switches))).all()
    assert [(r.name, r.set_by) for r in rows] == [(f"consume.{GROUP}", "admin-2")]


async def test_an_unknown_consumer_group_is_refused_and_nothing_changes(db: Database, broker: InMemoryBroker) -> None:
    service = runtime(db, broker)
    service.subscribe(GROUP, HandlerRegistry())
    switches = FaultSwitches(service)
    with pytest.raises(NotFound, match=f"it has: {GROUP}"):
        await switches.change(FaultChange(broker_paused=True, consumers_failing={"nobody": True}), actor="admin-1")
    await switches.refresh()
    assert not switches.state().broker_paused


async def test_a_crash_exits_at_once_with_the_status_of_a_kill(db: Database, broker: InMemoryBroker) -> None:
    exits: list[int] = []
    await FaultSwitches(runtime(db, broker), exit_process=exits.append).crash()
    assert exits == [CRASH_STATUS] == [137]


async def test_a_slow_replay_does_not_hold_up_the_switches(db: Database, broker: InMemoryBroker) -> None:
    """The control loop reads the switches and the replay requests together, but a replay runs
    apart: while one waits out an outage of its database, a switch turned by another replica
    still takes effect."""
    settings = Settings.model_validate(
        {"CONSUMER_MAX_ATTEMPTS": "2", "CONSUMER_BACKOFF_INITIAL_MS": "1", "CONSUMER_BACKOFF_MAX_MS": "20"}
    )
    service = ServiceRuntime(service="bakery", settings=settings, db=db, broker=broker)
    registry = HandlerRegistry()
    attempts: list[float] = []
    outage_over = asyncio.Event()

    @registry.on(PieBaked)
    async def on_pie(_: PieBaked, __: Envelope, ___: UnitOfWork) -> None:
        attempts.append(time.monotonic())
        if not outage_over.is_set():
            raise sa.exc.OperationalError("INSERT ...", {}, ConnectionRefusedError("connection refused"))

    runner = service.subscribe(GROUP, registry)
    switches = FaultSwitches(service)
    service.add_look(switches.look)
    await broker.publish([Envelope.wrap(PieBaked(pie_id=uuid4()), source="/t").to_outgoing(TOPIC)])
    [record] = broker.records(TOPIC)
    failpoints.hold(runner.failpoint, on=True)
    assert await runner.process(record) is Outcome.DEAD_LETTERED
    failpoints.hold(runner.failpoint, on=False)
    [letter] = await service.dead_letters.recent()
    await act_on_dead_letter(service.dead_letters, service.uow, "bakery", letter["id"], "replay", "admin-1")

    tasks = [asyncio.create_task(loop.run()) for loop in service.loops]
    try:
        await eventually(lambda: len(attempts) >= 3, "the replay is waiting out the outage", 10.0, every=0.02)
        await FaultSwitches(runtime(db, InMemoryBroker())).change(FaultChange(broker_paused=True), actor="admin-2")
        await eventually(
            lambda: service.broker.paused, "the switch turned elsewhere took effect here", 10.0, every=0.02
        )
        assert not outage_over.is_set()
        outage_over.set()

        async def replayed() -> bool:
            return bool((await service.dead_letters.get(letter["id"]) or {})["status"] == "replayed")

        await eventually(replayed, "the replay never ended", 10, every=0.02)
    finally:
        for loop in service.loops:
            loop.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
