"""Delivery as a saga participant, on a real SQLite database through the real consumer runner:
scheduling is idempotent per order, a free courier is assigned at once or the delivery waits
for one, and a courier's actions take it out for delivery and home (freeing the courier)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from pizzeria.contracts.delivery import (
    CourierAssigned,
    DeliveryCompleted,
    DeliveryPickedUp,
    DeliveryScheduled,
    ScheduleDelivery,
)
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.messaging.message import Message
from pizzeria.services.delivery import repository
from pizzeria.services.delivery.domain import DEMO_COURIERS, DeliveryStatus, next_status
from pizzeria.services.delivery.handlers import (
    advance,
    advance_deliveries,
    assign_waiting,
    build_handlers,
    seed_couriers,
)
from pizzeria.services.delivery.tables import couriers, deliveries, metadata
from tests.support.participant import Participant, decode


@pytest.fixture
def wakes() -> list[str]:
    return []


@pytest.fixture
async def delivery(db: Database, wakes: list[str]) -> Participant:
    """The delivery service, with no couriers yet (tests hire them)."""
    return await Participant.create(db, metadata, build_handlers(lambda: wakes.append("autopilot")), service="delivery")


async def hire(delivery: Participant, *names: str) -> list[UUID]:
    """Couriers, free, in this order of seniority (the most senior is assigned first)."""
    ids = [uuid4() for _ in names]
    start = utcnow()
    async with delivery.db.transaction() as conn:
        for n, (courier_id, name) in enumerate(zip(ids, names, strict=True)):
            await repository.add_courier(conn, courier_id, name, start + timedelta(seconds=n))
    return ids


def schedule(order_id: UUID) -> ScheduleDelivery:
    return ScheduleDelivery(order_id=order_id, customer_id="cust-1", address="1 Via Roma, Napoli")


async def delivery_of(delivery: Participant, order_id: UUID) -> dict[str, Any]:
    [row] = await delivery.rows(deliveries, deliveries.c.order_id == order_id)
    return row


async def carrying(delivery: Participant) -> dict[UUID, UUID | None]:
    """Courier → the delivery it carries (None: free)."""
    return {r["id"]: r["delivery_id"] for r in await delivery.rows(couriers)}


async def scheduled(delivery: Participant, order_id: UUID) -> UUID:
    """Schedule the order's delivery; its id."""
    replies = await delivery.send(schedule(order_id))
    assert isinstance(replies[0], DeliveryScheduled)
    return replies[0].delivery_id


async def step(delivery: Participant, delivery_id: UUID) -> tuple[DeliveryStatus, list[Message]]:
    """A courier's action; the new status and what it emitted."""
    uow = delivery.uow()
    status = await advance(uow, delivery_id)
    return status, [decode(e) for e in uow.emitted]


# -- the rules ---------------------------------------------------------------------------------


def test_a_delivery_moves_assigned_out_for_delivery_delivered() -> None:
    assert next_status(DeliveryStatus.ASSIGNED) is DeliveryStatus.OUT_FOR_DELIVERY
    assert next_status(DeliveryStatus.OUT_FOR_DELIVERY) is DeliveryStatus.DELIVERED


def test_a_waiting_delivery_has_no_courier_to_move_it() -> None:
    with pytest.raises(Conflict, match="no courier"):
        next_status(DeliveryStatus.WAITING)


def test_a_delivered_delivery_cannot_move_on() -> None:
    with pytest.raises(Conflict):
        next_status(DeliveryStatus.DELIVERED)


# -- scheduling --------------------------------------------------------------------------------


async def test_schedule_creates_the_delivery_and_assigns_a_free_courier(
    delivery: Participant, wakes: list[str]
) -> None:
    ana, _ = await hire(delivery, "Ana", "Ben")
    order_id = uuid4()
    replies = await delivery.send(schedule(order_id))
    row = await delivery_of(delivery, order_id)
    assert replies == [
        DeliveryScheduled(order_id=order_id, delivery_id=row["id"]),
        CourierAssigned(order_id=order_id, delivery_id=row["id"], courier_id=ana, courier_name="Ana"),
    ]
    assert (row["status"], row["courier_id"]) == ("assigned", ana)
    assert (row["customer_id"], row["address"]) == ("cust-1", "1 Via Roma, Napoli")
    assert (await carrying(delivery))[ana] == row["id"]
    assert wakes == ["autopilot"]


async def test_each_delivery_gets_its_own_free_courier(delivery: Participant) -> None:
    ana, ben = await hire(delivery, "Ana", "Ben")
    first, second = await scheduled(delivery, uuid4()), await scheduled(delivery, uuid4())
    assert await carrying(delivery) == {ana: first, ben: second}


async def test_a_second_schedule_for_the_order_only_acknowledges_again(delivery: Participant, wakes: list[str]) -> None:
    ana, ben = await hire(delivery, "Ana", "Ben")
    order_id = uuid4()
    delivery_id = await scheduled(delivery, order_id)
    before = await delivery_of(delivery, order_id)

    again = await delivery.send(schedule(order_id))
    assert again == [DeliveryScheduled(order_id=order_id, delivery_id=delivery_id)]
    assert await delivery_of(delivery, order_id) == before  # still one delivery, same courier
    assert await carrying(delivery) == {ana: delivery_id, ben: None}
    assert wakes == ["autopilot"]


async def test_with_every_courier_busy_the_delivery_waits(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    first = await scheduled(delivery, uuid4())
    order_id = uuid4()
    replies = await delivery.send(schedule(order_id))
    row = await delivery_of(delivery, order_id)
    assert replies == [DeliveryScheduled(order_id=order_id, delivery_id=row["id"])]
    assert (row["status"], row["courier_id"]) == ("waiting", None)
    assert await carrying(delivery) == {ana: first}


async def test_a_waiting_delivery_is_assigned_once_a_courier_is_free(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    first = await scheduled(delivery, uuid4())
    order_id = uuid4()
    waiting = await scheduled(delivery, order_id)

    busy = delivery.uow()
    assert await assign_waiting(busy) == 0  # Ana is still out
    assert busy.emitted == []
    assert (await delivery_of(delivery, order_id))["status"] == "waiting"

    await step(delivery, first)
    await step(delivery, first)  # delivered: Ana is free again
    uow = delivery.uow()
    assert await assign_waiting(uow) == 1
    assert [decode(e) for e in uow.emitted] == [
        CourierAssigned(order_id=order_id, delivery_id=waiting, courier_id=ana, courier_name="Ana")
    ]
    row = await delivery_of(delivery, order_id)
    assert (row["status"], row["courier_id"]) == ("assigned", ana)
    assert await carrying(delivery) == {ana: waiting}


async def test_assign_waiting_hands_out_the_oldest_first_while_couriers_are_free(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    first = await scheduled(delivery, uuid4())
    older, newer = uuid4(), uuid4()
    older_id = await scheduled(delivery, older)
    await scheduled(delivery, newer)
    await step(delivery, first)
    await step(delivery, first)

    assert await assign_waiting(delivery.uow()) == 1  # one courier free, two waiting
    assert (await delivery_of(delivery, older))["status"] == "assigned"
    assert (await delivery_of(delivery, newer))["status"] == "waiting"
    assert await carrying(delivery) == {ana: older_id}


async def test_assign_waiting_with_nothing_waiting_does_nothing(delivery: Participant) -> None:
    await hire(delivery, "Ana")
    uow = delivery.uow()
    assert await assign_waiting(uow) == 0
    assert uow.emitted == []


# -- on the road -------------------------------------------------------------------------------


async def test_advance_takes_the_order_out_and_home_and_frees_the_courier(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    order_id = uuid4()
    delivery_id = await scheduled(delivery, order_id)

    status, events = await step(delivery, delivery_id)
    assert status is DeliveryStatus.OUT_FOR_DELIVERY
    [picked_up] = events
    assert isinstance(picked_up, DeliveryPickedUp)
    assert (picked_up.order_id, picked_up.delivery_id, picked_up.courier_id) == (order_id, delivery_id, ana)
    assert (await delivery_of(delivery, order_id))["status"] == "out_for_delivery"
    assert await carrying(delivery) == {ana: delivery_id}  # still carrying it

    status, events = await step(delivery, delivery_id)
    assert status is DeliveryStatus.DELIVERED
    [completed] = events
    assert isinstance(completed, DeliveryCompleted)
    assert (completed.order_id, completed.delivery_id, completed.courier_id) == (order_id, delivery_id, ana)
    row = await delivery_of(delivery, order_id)
    assert (row["status"], row["courier_id"]) == ("delivered", ana)  # who delivered it is kept
    assert await carrying(delivery) == {ana: None}
    assert [type(m) for m in await delivery.emitted()] == [
        DeliveryScheduled,
        CourierAssigned,
        DeliveryPickedUp,
        DeliveryCompleted,
    ]


async def test_a_freed_courier_takes_the_next_new_delivery(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    first = await scheduled(delivery, uuid4())
    await step(delivery, first)
    await step(delivery, first)
    order_id = uuid4()
    replies = await delivery.send(schedule(order_id))
    assert [type(m) for m in replies] == [DeliveryScheduled, CourierAssigned]
    assert (await delivery_of(delivery, order_id))["courier_id"] == ana


async def test_a_waiting_delivery_cannot_advance(delivery: Participant) -> None:
    await hire(delivery, "Ana")
    await scheduled(delivery, uuid4())
    order_id = uuid4()
    waiting = await scheduled(delivery, order_id)
    uow = delivery.uow()
    with pytest.raises(Conflict):
        await advance(uow, waiting)
    assert uow.emitted == []
    assert (await delivery_of(delivery, order_id))["status"] == "waiting"


async def test_a_delivered_delivery_cannot_advance(delivery: Participant) -> None:
    [ana] = await hire(delivery, "Ana")
    order_id = uuid4()
    delivery_id = await scheduled(delivery, order_id)
    await step(delivery, delivery_id)
    await step(delivery, delivery_id)
    uow = delivery.uow()
    with pytest.raises(Conflict):
        await advance(uow, delivery_id)
    assert uow.emitted == []
    assert (await delivery_of(delivery, order_id))["status"] == "delivered"
    assert await carrying(delivery) == {ana: None}


async def test_advancing_an_unknown_delivery_is_not_found(delivery: Participant) -> None:
    with pytest.raises(NotFound):
        await advance(delivery.uow(), uuid4())


async def test_the_demo_couriers_are_hired_once(delivery: Participant) -> None:
    assert await seed_couriers(delivery.uow()) is True
    assert await seed_couriers(delivery.uow()) is False
    assert sorted(r["name"] for r in await delivery.rows(couriers)) == sorted(DEMO_COURIERS)
    assert set((await carrying(delivery)).values()) == {None}


async def test_the_autopilot_moves_every_due_delivery_at_once_but_not_one_moved_meanwhile(
    delivery: Participant,
) -> None:
    couriers_hired = await hire(delivery, "Ana", "Bo", "Cy")
    orders = [uuid4() for _ in couriers_hired]
    ids = [await scheduled(delivery, order_id) for order_id in orders]
    async with delivery.db.read() as conn:
        seen = await repository.on_the_road(conn, limit=10)
    assert sorted(d for d, _ in seen) == sorted(ids)
    await step(delivery, ids[0])  # the courier (or another replica) moved this one meanwhile
    uow = delivery.uow()
    assert await advance_deliveries(uow, seen) == 2
    assert uow.committed
    statuses = [(await delivery_of(delivery, order_id))["status"] for order_id in orders]
    assert statuses == ["out_for_delivery"] * 3, "the one moved meanwhile was not moved twice"
    picked_up = [m for m in await delivery.emitted() if isinstance(m, DeliveryPickedUp)]
    assert sorted(m.delivery_id for m in picked_up) == sorted(ids)
