"""Delivery use cases: schedule a ready order, give it to a free courier, follow it home."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pizzeria.contracts.delivery import (
    CourierAssigned,
    DeliveryCompleted,
    DeliveryPickedUp,
    DeliveryScheduled,
    ScheduleDelivery,
)
from pizzeria.kit import context, tracing
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.db import hold_lock
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.delivery import repository
from pizzeria.services.delivery.domain import DEMO_COURIERS, DeliveryStatus, next_status
from pizzeria.services.delivery.places import locate


def build_handlers(wake: Callable[[], None]) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.on_batch(ScheduleDelivery)
    async def schedule(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of deliveries to schedule: what exists for those orders and the free couriers
        are read once; each new delivery goes to a free courier if there is one (else it
        waits), and the deliveries and couriers are written once each."""
        scheduled = await repository.by_orders(uow.conn, {item.message.order_id for item in items})
        free = await repository.free_couriers(uow.conn, len(items))
        now = utcnow()
        new: list[dict[str, Any]] = []
        taken: list[dict[str, Any]] = []
        for item in items:
            command: ScheduleDelivery = item.message
            with item.handling():
                if command.order_id in scheduled:  # a re-sent command: acknowledge again
                    uow.emit(DeliveryScheduled(order_id=command.order_id, delivery_id=scheduled[command.order_id]))
                    continue
                delivery_id = uuid7()
                scheduled[command.order_id] = delivery_id
                courier = free.pop(0) if free else None
                new.append(
                    {
                        "id": delivery_id,
                        "order_id": command.order_id,
                        "customer_id": command.customer_id,
                        "address": command.address,
                        "courier_id": courier.id if courier else None,
                        "status": (DeliveryStatus.ASSIGNED if courier else DeliveryStatus.WAITING).value,
                        "created_at": now,
                        "updated_at": now,
                        "traceparent": context.traceparent.get(),
                    }
                )
                uow.emit(DeliveryScheduled(order_id=command.order_id, delivery_id=delivery_id))
                if courier is not None:
                    taken.append({"courier_id": courier.id, "delivery_id": delivery_id})
                    uow.emit(
                        CourierAssigned(
                            order_id=command.order_id,
                            delivery_id=delivery_id,
                            courier_id=courier.id,
                            courier_name=courier.name,
                        )
                    )
        await repository.add_all(uow.conn, new, taken)
        if new:
            uow.after_commit(wake)

    return registry


def assign(uow: UnitOfWork, delivery: repository.Delivery, courier: Any) -> None:
    """Give a waiting delivery (loaded in `uow`) to a free courier (locked in `uow`)."""
    delivery.status, delivery.courier_id, delivery.updated_at = DeliveryStatus.ASSIGNED, courier.id, utcnow()
    repository.set_courier(uow, courier.id, delivery.id)
    repository.save(uow, delivery)
    with tracing.span(
        "delivery assign courier",
        parent=delivery.traceparent,
        attributes={"order.id": str(delivery.order_id), "delivery.id": str(delivery.id)},
    ):
        uow.emit(
            CourierAssigned(
                order_id=delivery.order_id, delivery_id=delivery.id, courier_id=courier.id, courier_name=courier.name
            )
        )


async def assign_waiting(uow: UnitOfWork, limit: int = 50) -> int:
    """Hand out waiting deliveries, the oldest first, while couriers are free (the most senior
    first): as many free couriers as deliveries wait (up to `limit`) are taken in one query, as
    many waiting deliveries claimed in another, and both written at commit, one statement each.
    A courier no delivery waits for is not held meanwhile (on PostgreSQL a delivery scheduled
    in that moment takes it at once)."""
    # Usually none wait, or every courier is out: no write transaction for that.
    async with uow.db.read() as conn:
        to_hand_out = await repository.assignable(conn, limit)
    if not to_hand_out:
        return 0
    async with uow:
        handed_out = await hand_out(uow, to_hand_out)
        await uow.commit()
    return handed_out


async def hand_out(uow: UnitOfWork, count: int) -> int:
    """Inside `uow`: hand up to `count` waiting deliveries, the oldest first, to as many free
    couriers (the most senior first), written at commit; how many were handed out."""
    free = await repository.free_couriers(uow.conn, count)
    waiting = await repository.claim_waiting(uow, len(free)) if free else []
    for delivery, courier in zip(waiting, free, strict=False):
        assign(uow, delivery, courier)
    return len(waiting)


async def dispatch(uow: UnitOfWork, *, to_hand_out: int, due: Sequence[tuple[UUID, datetime]]) -> tuple[int, int]:
    """The dispatcher's work inside `uow` (written at its commit): hand out up to `to_hand_out`
    waiting deliveries (as `assign_waiting`) and move on the `due` ones (as
    `advance_deliveries`); how many were handed out, and how many moved on. The couriers and
    waiting deliveries it hands out are taken first, skipping those others hold (PostgreSQL);
    the deliveries it moves on are locked next, in key order, as every transaction that locks
    several does."""
    handed_out = await hand_out(uow, to_hand_out) if to_hand_out else 0
    moved = 0
    if due:
        await repository.load_many(uow, [delivery_id for delivery_id, _ in due])
        for delivery_id, began in due:
            with contextlib.suppress(Conflict, NotFound):
                moved += await move_delivery_on(uow, delivery_id, stage_began=began) is not None
    return handed_out, moved


async def advance(uow: UnitOfWork, delivery_id: UUID) -> DeliveryStatus:
    """A courier's action: picked up, then delivered (which frees the courier)."""
    async with uow:
        status = await move_delivery_on(uow, delivery_id)
        assert status is not None
        await uow.commit()
    return status


async def advance_deliveries(uow: UnitOfWork, due: Sequence[tuple[UUID, datetime]]) -> int:
    """The autopilot's move: every delivery whose stage is over, in one transaction (loaded in
    one query, written in one statement per table). One no longer in the stage it was seen in
    (its courier, or another replica, moved it) is left."""
    async with uow:
        _, moved = await dispatch(uow, to_hand_out=0, due=due)
        await uow.commit()
    return moved


async def move_delivery_on(
    uow: UnitOfWork, delivery_id: UUID, *, stage_began: datetime | None = None
) -> DeliveryStatus | None:
    """Move a delivery to its next stage inside `uow` (written at commit). With `stage_began`,
    only if its current stage began then (else None)."""
    delivery = await repository.load(uow, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    if stage_began is not None and as_utc(delivery.updated_at) != as_utc(stage_began):
        return None
    status = next_status(delivery.status)
    courier_id = delivery.courier_id
    assert courier_id is not None  # a delivery past waiting has its courier
    now = utcnow()
    # Part of the order's trace (the delivery keeps the trace of the command that scheduled it).
    with tracing.span(
        f"delivery {status.value}",
        parent=delivery.traceparent,
        attributes={"order.id": str(delivery.order_id), "delivery.id": str(delivery_id)},
    ):
        delivery.status, delivery.updated_at = status, now
        repository.save(uow, delivery)
        if status is DeliveryStatus.OUT_FOR_DELIVERY:
            uow.emit(
                DeliveryPickedUp(
                    order_id=delivery.order_id,
                    delivery_id=delivery_id,
                    courier_id=courier_id,
                    at=now,
                    customer_id=delivery.customer_id,
                    destination=locate(delivery.address),
                )
            )
        else:
            repository.set_courier(uow, courier_id, None)
            uow.emit(
                DeliveryCompleted(order_id=delivery.order_id, delivery_id=delivery_id, courier_id=courier_id, at=now)
            )
    return status


async def seed_couriers(uow: UnitOfWork) -> bool:
    async with uow:
        await hold_lock(uow.conn, "delivery seed")  # replicas starting together seed once
        if await repository.get_flag(uow.conn, "couriers"):
            return False
        now = utcnow()
        for name in DEMO_COURIERS:
            await repository.add_courier(uow.conn, uuid7(), name, now)
        await repository.set_flag(uow.conn, "couriers", now.isoformat())
        await uow.commit()
    return True
