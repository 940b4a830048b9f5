"""The saga engine on a toy four-step saga (reserve → charge → cook, the pivot → ship) on a
real SQLite database: every transition, compensation, abort and timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from pizzeria.kit.db import Database
from pizzeria.messaging import saga as saga_module
from pizzeria.messaging.message import Message
from pizzeria.messaging.saga import Change, Saga, SagaDefinition, SagaEngine, SagaState, Step, Transition, history
from pizzeria.messaging.tables import outbox
from pizzeria.messaging.uow import UnitOfWork


class Reserve(Message, context="sagatest", kind="command", key="id"):
    id: str


class Release(Message, context="sagatest", kind="command", key="id"):
    id: str


class Charge(Message, context="sagatest", kind="command", key="id"):
    id: str


class Refund(Message, context="sagatest", kind="command", key="id"):
    id: str


class Cook(Message, context="sagatest", kind="command", key="id"):
    id: str


class Uncook(Message, context="sagatest", kind="command", key="id"):
    id: str


class Ship(Message, context="sagatest", kind="command", key="id"):
    id: str


class Reserved(Message, context="sagatest", key="id"):
    id: str


class OutOfStock(Message, context="sagatest", key="id"):
    id: str


class Released(Message, context="sagatest", key="id"):
    id: str


class Charged(Message, context="sagatest", key="id"):
    id: str


class Declined(Message, context="sagatest", key="id"):
    id: str


class Refunded(Message, context="sagatest", key="id"):
    id: str


class Started(Message, context="sagatest", key="id"):
    id: str


class Uncooked(Message, context="sagatest", key="id"):
    id: str


class TooLate(Message, context="sagatest", key="id"):
    id: str


class Delivered(Message, context="sagatest", key="id"):
    id: str


class ToyData(BaseModel):
    id: str


def cmd(kind: type[Message]) -> Any:
    return lambda data: kind(id=data.id)


DEFINITION = SagaDefinition(
    name="toy",
    data_type=ToyData,
    steps=(
        Step(
            "reserve",
            command=cmd(Reserve),
            success=(Reserved,),
            failure=(OutOfStock,),
            compensation=cmd(Release),
            compensated_by=(Released,),
            timeout=timedelta(seconds=30),
        ),
        Step(
            "charge",
            command=cmd(Charge),
            success=(Charged,),
            failure=(Declined,),
            compensation=cmd(Refund),
            compensated_by=(Refunded,),
            timeout=timedelta(seconds=20),
        ),
        Step(
            "cook",
            command=cmd(Cook),
            success=(Started,),
            compensation=cmd(Uncook),
            compensated_by=(Uncooked,),
            refused_by=(TooLate,),
            timeout=timedelta(minutes=30),
            pivot=True,
        ),
        Step("ship", command=cmd(Ship), success=(Delivered,), resend_after=timedelta(minutes=5)),
    ),
    reasons={OutOfStock: "out_of_stock", Declined: "payment_failed"},
    compensation_timeout=timedelta(seconds=10),
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def seen() -> list[Transition]:
    return []


@pytest.fixture
def engine(clock: Clock, seen: list[Transition]) -> SagaEngine[ToyData]:
    async def listener(_: UnitOfWork, __: Saga, transition: Transition) -> None:
        seen.append(transition)

    return SagaEngine(DEFINITION, listener=listener, clock=clock)


class Harness:
    def __init__(self, db: Database, engine: SagaEngine) -> None:
        self.db, self.engine = db, engine

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, source="/test")

    async def start(self, saga_id: str = "s1") -> None:
        async with self.uow() as uow:
            self.engine.start(uow, saga_id, ToyData(id=saga_id))
            await uow.commit()

    async def reply(self, message: Message, saga_id: str = "s1") -> Transition:
        async with self.uow() as uow:
            transition = await self.engine.on_reply(uow, saga_id, message, "msg")
            await uow.commit()
        return transition

    async def abort(self, reason: str = "customer_cancelled", saga_id: str = "s1") -> Transition | None:
        async with self.uow() as uow:
            transition = await self.engine.abort(uow, saga_id, reason)
            await uow.commit()
        return transition

    async def tick(self) -> list[Transition]:
        """What the timer does: expire every saga whose deadline passed."""
        async with self.db.read() as conn:
            due = await SagaEngine.due(conn, self.engine.clock())
        out = []
        for saga_id in due:
            async with self.uow() as uow:
                out.append(await self.engine.expire(uow, saga_id))
                await uow.commit()
        return out

    async def saga(self, saga_id: str = "s1") -> Saga:
        async with self.db.read() as conn:
            found = await saga_module.load(conn, saga_id)
        assert found is not None
        return found

    async def sent(self) -> list[str]:
        """Command types sent so far, in order (from the outbox)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(outbox.c.headers).order_by(outbox.c.seq))).all()
        return [orjson.loads(r.headers)["ce_type"].split(".")[2] for r in rows]


@pytest.fixture
def saga(db: Database, engine: SagaEngine) -> Harness:
    return Harness(db, engine)


def changes(seen: list[Transition]) -> list[tuple[Change, str | None]]:
    return [(t.change, t.step) for t in seen]


async def test_happy_path_sends_each_command_and_completes(saga: Harness, seen: list[Transition]) -> None:
    await saga.start()
    assert await saga.sent() == ["Reserve"]
    for reply in (Reserved, Charged, Started, Delivered):
        await saga.reply(reply(id="s1"))
    assert await saga.sent() == ["Reserve", "Charge", "Cook", "Ship"]
    final = await saga.saga()
    assert (final.state, final.deadline_at) == (SagaState.COMPLETED, None)
    assert changes(seen)[-2:] == [(Change.STEP_SUCCEEDED, "ship"), (Change.COMPLETED, None)]


async def test_a_failed_first_step_compensates_nothing(saga: Harness, seen: list[Transition]) -> None:
    await saga.start()
    await saga.reply(OutOfStock(id="s1"))
    final = await saga.saga()
    assert (final.state, final.reason) == (SagaState.COMPENSATED, "out_of_stock")
    assert await saga.sent() == ["Reserve"]
    assert changes(seen) == [(Change.COMPENSATION_STARTED, "reserve"), (Change.COMPENSATED, None)]


async def test_a_failed_step_undoes_the_ones_before_it_not_itself(saga: Harness) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    await saga.reply(Declined(id="s1"))
    assert await saga.sent() == ["Reserve", "Charge", "Release"]
    assert (await saga.saga()).state is SagaState.COMPENSATING
    await saga.reply(Released(id="s1"))
    final = await saga.saga()
    assert (final.state, final.reason) == (SagaState.COMPENSATED, "payment_failed")


async def test_a_timeout_undoes_the_step_in_flight_too_in_reverse_order(saga: Harness, clock: Clock) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    clock.advance(seconds=19)
    assert await saga.tick() == []
    clock.advance(seconds=2)
    [transition] = await saga.tick()
    assert transition.change is Change.COMPENSATION_STARTED
    assert await saga.sent() == ["Reserve", "Charge", "Refund"]
    await saga.reply(Refunded(id="s1"))
    assert await saga.sent() == ["Reserve", "Charge", "Refund", "Release"]
    await saga.reply(Released(id="s1"))
    final = await saga.saga()
    assert (final.state, final.reason) == (SagaState.COMPENSATED, "timeout")


async def test_a_late_success_during_compensation_is_ignored(saga: Harness) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    await saga.abort()
    assert (await saga.reply(Charged(id="s1"))).change is Change.IGNORED  # the refund deals with it
    assert (await saga.saga()).state is SagaState.COMPENSATING


async def test_a_lost_compensation_ack_resends_the_compensation(saga: Harness, clock: Clock) -> None:
    await saga.start()
    await saga.reply(OutOfStock(id="s1"))  # nothing to undo: compensated at once
    await saga.start("s2")
    await saga.reply(Reserved(id="s2"), "s2")
    await saga.reply(Declined(id="s2"), "s2")
    clock.advance(seconds=11)
    [transition] = await saga.tick()
    assert (transition.change, transition.step) == (Change.RESENT, "reserve")
    assert (await saga.sent()).count("Release") == 2
    await saga.reply(Released(id="s2"), "s2")
    assert (await saga.saga("s2")).state is SagaState.COMPENSATED


async def test_abort_before_the_pivot_compensates_everything_done(saga: Harness, seen: list[Transition]) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    await saga.reply(Charged(id="s1"))
    transition = await saga.abort()
    assert transition is not None
    assert transition.change is Change.COMPENSATION_STARTED
    for ack in (Uncooked, Refunded, Released):
        await saga.reply(ack(id="s1"))
    assert await saga.sent() == ["Reserve", "Charge", "Cook", "Uncook", "Refund", "Release"]
    final = await saga.saga()
    assert (final.state, final.reason) == (SagaState.COMPENSATED, "customer_cancelled")


async def test_abort_after_the_pivot_is_refused(saga: Harness) -> None:
    await saga.start()
    for reply in (Reserved, Charged, Started):
        await saga.reply(reply(id="s1"))
    assert await saga.abort() is None
    assert (await saga.saga()).state is SagaState.RUNNING


async def test_compensating_the_pivot_can_be_refused_and_the_saga_goes_on(saga: Harness) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    await saga.reply(Charged(id="s1"))
    await saga.abort()
    resumed = await saga.reply(TooLate(id="s1"))
    assert (resumed.change, resumed.reason) == (Change.RESUMED, "customer_cancelled")
    state = await saga.saga()
    assert (state.state, state.reason) == (SagaState.RUNNING, None)
    await saga.reply(Started(id="s1"))
    await saga.reply(Delivered(id="s1"))
    assert (await saga.saga()).state is SagaState.COMPLETED
    assert "Refund" not in await saga.sent(), "nothing else was undone"


async def test_the_pivot_succeeding_during_its_compensation_resumes_and_advances(saga: Harness) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    await saga.reply(Charged(id="s1"))
    await saga.abort()
    transition = await saga.reply(Started(id="s1"))
    assert transition.change is Change.STEP_SUCCEEDED
    assert (await saga.saga()).step == 3
    assert (await saga.reply(TooLate(id="s1"))).change is Change.IGNORED


async def test_a_forward_only_step_resends_its_command_when_no_reply_comes(saga: Harness, clock: Clock) -> None:
    await saga.start()
    for reply in (Reserved, Charged, Started):
        await saga.reply(reply(id="s1"))
    clock.advance(minutes=6)
    [transition] = await saga.tick()
    assert (transition.change, transition.step) == (Change.RESENT, "ship")
    assert (await saga.sent()).count("Ship") == 2
    assert (await saga.saga()).state is SagaState.RUNNING


async def test_a_compensated_saga_is_never_compensated_again(saga: Harness, clock: Clock) -> None:
    await saga.start()
    await saga.reply(Reserved(id="s1"))
    await saga.reply(Declined(id="s1"))
    await saga.reply(Released(id="s1"))
    before = await saga.sent()
    for late in (Declined(id="s1"), Released(id="s1"), Charged(id="s1"), OutOfStock(id="s1")):
        assert (await saga.reply(late)).change is Change.IGNORED
    assert await saga.abort() is None
    clock.advance(hours=2)
    assert await saga.tick() == []
    assert await saga.sent() == before


async def test_replies_for_other_steps_are_ignored_and_logged(saga: Harness, db: Database) -> None:
    await saga.start()
    assert (await saga.reply(Charged(id="s1"))).change is Change.IGNORED
    assert (await saga.reply(Released(id="s1"))).change is Change.IGNORED
    assert (await saga.saga()).step == 0
    async with db.read() as conn:
        entries = [e["entry"] for e in await history(conn, "s1")]
    assert entries[0] == "started"
    assert entries[-1].startswith("ignored Released")


async def test_unknown_sagas_ignore_replies(saga: Harness) -> None:
    assert (await saga.reply(Reserved(id="nope"), "nope")).change is Change.IGNORED


def test_the_definition_draws_as_mermaid() -> None:
    diagram = DEFINITION.mermaid()
    assert diagram.startswith("stateDiagram-v2")
    for edge in (
        "reserve --> charge: Reserved",
        "charge --> undo_reserve: Declined (payment_failed)",
        "charge --> undo_charge: no reply in 20s",
        "undo_cook --> cook: TooLate (too late to undo)",
        "ship --> ship: no reply in 300s, send again",
        "undo_reserve --> compensated: Released",
    ):
        assert edge in diagram, edge
    assert "ship --> undo" not in diagram, "no way back after the pivot"


def test_definitions_refuse_compensation_after_the_pivot() -> None:
    with pytest.raises(ValueError, match="only go forward"):
        SagaDefinition(
            "bad",
            data_type=ToyData,
            steps=(
                Step("a", success=(Reserved,), pivot=True),
                Step("b", success=(Charged,), compensation=cmd(Refund)),
            ),
            reasons={},
        )


async def test_the_timer_rests_when_nothing_is_due_and_runs_again_after_a_full_batch(
    db: Database, engine: SagaEngine, saga: Harness, clock: Clock
) -> None:
    # Its answer drives a background loop: anything but True there means "wait for the interval",
    # while True (a full batch expired; more may be due) means "at once". Answering a count made
    # an idle timer run back to back (0 read as "again within 0 s").
    timer = saga_module.SagaTimer(engine, db, saga.uow, batch=2)
    assert await timer.tick() is False
    for saga_id in ("s1", "s2", "s3"):
        await saga.start(saga_id)
    clock.advance(seconds=31)
    assert await timer.tick() is True
    assert await timer.tick() is False
    assert {(await saga.saga(s)).state for s in ("s1", "s2", "s3")} == {SagaState.COMPENSATING}
