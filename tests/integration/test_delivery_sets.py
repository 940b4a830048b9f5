"""The delivery dispatcher works in sets, on SQLite and PostgreSQL: a set of waiting deliveries
is handed to free couriers, and a set of deliveries under way moved on, in as many statements
as a set of one; the oldest waiting delivery gets the one free courier; a delivery moved on
meanwhile is left as it is. On PostgreSQL, a dispatcher does not wait for the courier another
is assigning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import pytest
from prometheus_client import REGISTRY as METRICS

from pizzeria.contracts.delivery import CourierAssigned, DeliveryCompleted, DeliveryPickedUp
from pizzeria.kit.db import Database
from pizzeria.services.delivery import repository
from pizzeria.services.delivery.autopilot import CourierDispatcher
from pizzeria.services.delivery.handlers import advance_deliveries, assign_waiting, build_handlers
from pizzeria.services.delivery.tables import couriers, deliveries, metadata
from tests.support.participant import HeldCommit, Participant, decode
from tests.support.participant import on_postgres as participant_on_postgres
from tests.unit.test_delivery import carrying, delivery_of, hire, schedule, scheduled, step


@pytest.fixture
async def delivery(db: Database) -> Participant:
    """The delivery service, with no couriers yet (tests hire them)."""
    return await Participant.create(db, metadata, build_handlers(lambda: None), service="delivery")


def statements() -> float:
    return METRICS.get_sample_value("pizzeria_db_statements_total") or 0.0


def transactions() -> float:
    return METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0


async def counted(act: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    """What `act` returned, and how many statements it sent."""
    before = statements()
    done = await act()
    return done, statements() - before


async def waiting_set(delivery: Participant, size: int) -> tuple[list[UUID], list[UUID]]:
    """`size` orders whose deliveries wait (every courier is busy), then as many couriers hired:
    the orders, oldest first, and the couriers, most senior first."""
    orders = [uuid4() for _ in range(size)]
    for order_id in orders:
        await scheduled(delivery, order_id)
    return orders, await hire(delivery, *(f"courier {n}" for n in range(size)))


async def under_way(delivery: Participant) -> list[tuple[UUID, datetime]]:
    async with delivery.db.read() as conn:
        return await repository.on_the_road(conn, limit=100)


async def statements_of_a_set(delivery: Participant, size: int) -> list[float]:
    """Statements to hand the `size` oldest waiting deliveries to free couriers, take them out,
    and bring them home."""
    spent = []
    done, count = await counted(lambda: assign_waiting(delivery.uow(), limit=size))
    assert done == size
    spent.append(count)
    for stage in ("out_for_delivery", "delivered"):
        due = await under_way(delivery)
        assert len(due) == size
        done, count = await counted(lambda due=due: advance_deliveries(delivery.uow(), due))  # type: ignore[misc]
        assert done == size
        spent.append(count)
        moved = await delivery.rows(deliveries, deliveries.c.id.in_([d for d, _ in due]))
        assert {r["status"] for r in moved} == {stage}
    return spent


async def test_a_set_of_deliveries_costs_the_statements_of_a_set_of_one(delivery: Participant) -> None:
    orders, _ = await waiting_set(delivery, 7)
    one = await statements_of_a_set(delivery, 1)
    six = await statements_of_a_set(delivery, 6)
    assert six == one, "a set's statements do not grow with its size"
    assert {(await delivery_of(delivery, order_id))["status"] for order_id in orders} == {"delivered"}
    assert set((await carrying(delivery)).values()) == {None}, "every courier came home"
    emitted = await delivery.emitted()
    kinds = (CourierAssigned, DeliveryPickedUp, DeliveryCompleted)
    assert [sum(isinstance(m, kind) for m in emitted) for kind in kinds] == [7, 7, 7]


async def test_with_every_courier_out_a_waiting_delivery_costs_no_write_transaction(delivery: Participant) -> None:
    await hire(delivery, "Ana")
    await scheduled(delivery, uuid4())  # Ana takes it

    async def cost_of_assigning() -> tuple[float, float]:
        """Statements and transactions an `assign_waiting` that hands out nothing costs."""
        before = statements(), transactions()
        uow = delivery.uow()
        assert await assign_waiting(uow) == 0
        assert uow.emitted == []
        return statements() - before[0], transactions() - before[1]

    nothing_waits = await cost_of_assigning()
    order_id = uuid4()
    await scheduled(delivery, order_id)  # this one waits
    assert await cost_of_assigning() == nothing_waits
    assert (await delivery_of(delivery, order_id))["status"] == "waiting"


async def test_a_dispatcher_step_hands_out_and_moves_on_in_one_transaction(delivery: Participant) -> None:
    await hire(delivery, "Ana")
    under_way, waiting = await scheduled(delivery, uuid4()), uuid4()
    await scheduled(delivery, waiting)  # Ana is out: this one waits
    await hire(delivery, "Bo")
    dispatcher = CourierDispatcher(delivery.runtime, drive=True, stage=timedelta(0))
    before = transactions()
    assert await dispatcher.step() is True  # one read, then one write
    assert transactions() - before == 2
    assert (await delivery_of(delivery, waiting))["status"] == "assigned"
    [moved] = await delivery.rows(deliveries, deliveries.c.id == under_way)
    assert moved["status"] == "out_for_delivery"
    before = transactions()
    await dispatcher.step()  # it had work: it looks inside its write transaction, no read first
    assert transactions() - before == 1
    statuses = {r["status"] for r in await delivery.rows(deliveries)}
    assert statuses == {"delivered", "out_for_delivery"}, "both moved on, each one stage"


async def test_of_deliveries_waiting_for_one_free_courier_the_oldest_gets_it(delivery: Participant) -> None:
    (older, newer), (busy, free) = await waiting_set(delivery, 2)
    async with delivery.db.transaction() as conn:  # the senior courier is out with something else
        await conn.execute(couriers.update().where(couriers.c.id == busy).values(delivery_id=uuid4()))

    uow = delivery.uow()
    assert await assign_waiting(uow) == 1
    oldest = await delivery_of(delivery, older)
    assert [decode(e) for e in uow.emitted] == [
        CourierAssigned(order_id=older, delivery_id=oldest["id"], courier_id=free, courier_name="courier 1")
    ]
    assert (oldest["status"], oldest["courier_id"]) == ("assigned", free)
    assert ((await delivery_of(delivery, newer))["status"], (await carrying(delivery))[free]) == (
        "waiting",
        oldest["id"],
    )


async def test_a_run_of_new_deliveries_gives_the_one_free_courier_to_the_first(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    first, second = uuid4(), uuid4()
    await delivery.deliver_run([schedule(first), schedule(second)])
    assigned = [m for m in await delivery.emitted() if isinstance(m, CourierAssigned)]
    assert [(m.order_id, m.courier_id) for m in assigned] == [(first, ana)]
    assert (await delivery_of(delivery, second))["status"] == "waiting"
    assert await carrying(delivery) == {ana: (await delivery_of(delivery, first))["id"]}


async def test_deliveries_moved_on_meanwhile_are_left_as_they_are_in_a_set(delivery: Participant) -> None:
    hired = await hire(delivery, "Ana", "Bo", "Cy")
    orders = [uuid4() for _ in hired]
    ids = [await scheduled(delivery, order_id) for order_id in orders]
    seen = await under_way(delivery)
    await step(delivery, ids[1])  # its courier took it out meanwhile: its stage began later
    await step(delivery, ids[2])  # and this one out and home
    await step(delivery, ids[2])
    before = [await delivery_of(delivery, order_id) for order_id in orders[1:]]

    uow = delivery.uow()
    assert await advance_deliveries(uow, seen) == 1
    [moved] = [decode(e) for e in uow.emitted]
    assert isinstance(moved, DeliveryPickedUp)
    assert (moved.delivery_id, moved.courier_id) == (ids[0], hired[0])
    assert (await delivery_of(delivery, orders[0]))["status"] == "out_for_delivery"
    assert [await delivery_of(delivery, order_id) for order_id in orders[1:]] == before, "left as they were"
    assert await carrying(delivery) == {hired[0]: ids[0], hired[1]: ids[1], hired[2]: None}


# -- PostgreSQL: two dispatchers at once ---------------------------------------------------------


@pytest.fixture
async def on_postgres() -> AsyncIterator[Participant]:
    async with participant_on_postgres(metadata, build_handlers(lambda: None), service="delivery") as delivery:
        yield delivery


@pytest.mark.postgres
async def test_a_dispatcher_does_not_wait_for_the_courier_another_is_assigning(on_postgres: Participant) -> None:
    delivery = on_postgres
    older, newer = uuid4(), uuid4()
    older_id, newer_id = await scheduled(delivery, older), await scheduled(delivery, newer)
    [ana] = await hire(delivery, "Ana")

    # One dispatcher claims the oldest delivery and the one free courier, and has not committed.
    first = delivery.uow()
    held = HeldCommit(first)
    assigning = asyncio.create_task(assign_waiting(first, limit=1))
    await asyncio.wait_for(held.reached.wait(), 10)

    # Another (replica) claims the next delivery, finds no courier it can take, and is done.
    second = delivery.uow()
    assert await asyncio.wait_for(assign_waiting(second, limit=1), 10) == 0
    assert second.emitted == []

    held.release.set()
    assert await assigning == 1
    assert [decode(e) for e in first.emitted] == [
        CourierAssigned(order_id=older, delivery_id=older_id, courier_id=ana, courier_name="Ana")
    ]
    assert await carrying(delivery) == {ana: older_id}
    assert (await delivery_of(delivery, newer))["status"] == "waiting"
    assert (await delivery_of(delivery, newer))["id"] == newer_id


@pytest.mark.postgres
async def test_a_dispatcher_holds_only_as_many_couriers_as_deliveries_wait(on_postgres: Participant) -> None:
    """One delivery waits and three couriers are free: while the dispatcher hands it out, the
    two couriers it does not need stay free for whatever else is scheduled in that moment."""
    delivery = on_postgres
    order = uuid4()
    waiting_id = await scheduled(delivery, order)
    ana, bea, cai = await hire(delivery, "Ana", "Bea", "Cai")

    dispatcher = delivery.uow()
    held = HeldCommit(dispatcher)
    assigning = asyncio.create_task(assign_waiting(dispatcher))
    await asyncio.wait_for(held.reached.wait(), 10)
    async with delivery.db.transaction() as conn:  # as a delivery scheduled right now would look
        free = {c.id for c in await repository.free_couriers(conn, 50)}
    assert free == {bea, cai}

    held.release.set()
    assert await asyncio.wait_for(assigning, 10) == 1
    assert await carrying(delivery) == {ana: waiting_id, bea: None, cai: None}
    assert (await delivery_of(delivery, order))["status"] == "assigned"
