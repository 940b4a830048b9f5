"""Events of one order reach notifications on two topics and may be handled at the same time:
a payment receipt handled while the order's contact is still being added is deferred, and
released once the contact is there; it is never lost and never sent twice. What a customer is
not told of is neither sent nor kept waiting for a contact."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from pizzeria.contracts.orders import Contact, OrderLine, OrderPlaced, OrderStatus, OrderStatusChanged, PaymentMethod
from pizzeria.contracts.payments import PaymentCompleted
from pizzeria.contracts.telemetry import CourierArriving
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.migrations import upgrade
from pizzeria.messaging.consumer import Incoming
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.notifications import repository
from pizzeria.services.notifications.app import MIGRATIONS
from pizzeria.services.notifications.domain import DEFAULT_TEMPLATES
from pizzeria.services.notifications.handlers import build_events, release_deferred
from pizzeria.services.notifications.tables import deferred, notifications, templates


@pytest.fixture
async def notifications_db(db: Database) -> Database:
    await upgrade(db.url, [MESSAGING_MIGRATIONS, MIGRATIONS])
    async with db.transaction() as conn:
        await repository.seed_templates(conn, DEFAULT_TEMPLATES)
    return db


def placed(order_id: uuid.UUID) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="c1",
        items=[OrderLine(menu_item_id=uuid.uuid4(), name="M", size="medium", quantity=1, unit_price=990)],
        total=990,
        currency="EUR",
        payment_method=PaymentMethod(token="tok_visa"),
        delivery_address="1 St",
        contact=Contact(email="c1@example.com"),
        placed_at=utcnow(),
    )


def envelope(message: OrderPlaced | PaymentCompleted) -> Envelope:
    return Envelope.wrap(message, source="/test")


@pytest.mark.parametrize("receipt_first", [False, True])
async def test_receipt_is_sent_whichever_event_commits_first(notifications_db: Database, receipt_first: bool) -> None:
    db = notifications_db
    handlers = build_events(lambda: None)
    order_id = uuid.uuid4()
    order_event = placed(order_id)
    payment_event = PaymentCompleted(
        payment_id=uuid.uuid4(), order_id=order_id, amount=990, currency="EUR", provider_charge_id="ch_1", at=utcnow()
    )
    on_placed = handlers.get(OrderPlaced.type_name()).batch  # type: ignore[union-attr]
    on_paid = handlers.get(PaymentCompleted.type_name()).batch  # type: ignore[union-attr]
    first_started = asyncio.Event()

    async def handle(event: OrderPlaced | PaymentCompleted, handler, hold: bool) -> None:  # type: ignore[no-untyped-def]
        async with UnitOfWork(db, source="/test") as uow:
            await handler([Incoming(event, envelope(event), "notifications")], uow)
            if hold:  # keep the transaction open while the other event is handled
                first_started.set()
                await asyncio.sleep(0.3)
            await uow.commit()

    async def second(event, handler) -> None:  # type: ignore[no-untyped-def]
        await first_started.wait()
        await handle(event, handler, hold=False)

    if receipt_first:
        await asyncio.gather(handle(payment_event, on_paid, hold=True), second(order_event, on_placed))
    else:
        await asyncio.gather(handle(order_event, on_placed, hold=True), second(payment_event, on_paid))

    await release_deferred(UnitOfWork(db, source="/test"))  # what the dispatcher does every second
    await release_deferred(UnitOfWork(db, source="/test"))  # and again: nothing more to release
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(notifications.c.template, notifications.c.channel).where(notifications.c.order_id == order_id)
            )
        ).all()
    assert Counter((r.template, r.channel) for r in rows) == Counter({("payment_receipt", "email"): 1})


@pytest.mark.parametrize("arriving_first", [False, True])
async def test_a_courier_arriving_is_told_once_per_order_however_often_it_is_said(
    notifications_db: Database, arriving_first: bool
) -> None:
    db = notifications_db
    handlers = build_events(lambda: None)
    order_id = uuid.uuid4()

    def arriving(eta_s: int) -> CourierArriving:
        return CourierArriving(
            order_id=order_id,
            delivery_id=uuid.uuid4(),
            customer_id="c1",
            courier_id="courier-1",
            distance_m=420.0,
            eta_s=eta_s,
            at=utcnow(),
        )

    async def handle(*events: OrderPlaced | CourierArriving) -> None:
        handler = handlers.get(type(events[0]).type_name()).batch  # type: ignore[union-attr]
        async with UnitOfWork(db, source="/test") as uow:
            await handler([Incoming(e, Envelope.wrap(e, source="/test"), "notifications") for e in events], uow)
            await uow.commit()

    told_twice = (arriving(230), arriving(200))  # e.g. sent again by another replica, or a redelivery
    if arriving_first:
        await handle(*told_twice)  # before the order's contact: deferred, then released with it
        await handle(placed(order_id))
    else:
        await handle(placed(order_id))
        await handle(*told_twice)
    await handle(arriving(100))
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(notifications.c.channel, notifications.c.body).where(
                    notifications.c.order_id == order_id, notifications.c.template == "courier_arriving"
                )
            )
        ).all()
    assert [(r.channel, r.body) for r in rows] == [
        ("email", "Your pizza is about 4 minutes away: the courier is nearly at your door.")
    ]


async def test_the_kitchen_steps_are_not_told_nor_kept_waiting_while_the_delivery_is_told(
    notifications_db: Database,
) -> None:
    db = notifications_db
    handlers = build_events(lambda: None)
    order_id = uuid.uuid4()
    steps = [
        OrderStatus.PAID,
        OrderStatus.PREPARING,
        OrderStatus.BAKING,
        OrderStatus.READY,
        OrderStatus.OUT_FOR_DELIVERY,
    ]

    def changed(previous: OrderStatus, status: OrderStatus) -> OrderStatusChanged:
        return OrderStatusChanged(
            order_id=order_id, customer_id="c1", status=status, previous_status=previous, at=utcnow()
        )

    async def handle(*events: OrderPlaced | OrderStatusChanged) -> None:
        handler = handlers.get(type(events[0]).type_name()).batch  # type: ignore[union-attr]
        async with UnitOfWork(db, source="/test") as uow:
            await handler([Incoming(e, Envelope.wrap(e, source="/test"), "notifications") for e in events], uow)
            await uow.commit()

    # the status changes before the order's contact is known: only the told ones wait for it
    await handle(*(changed(a, b) for a, b in zip([OrderStatus.PENDING, *steps], steps, strict=False)))
    async with db.read() as conn:
        waiting = (await conn.execute(sa.select(deferred.c.template))).scalars().all()
    assert sorted(waiting) == ["order_out_for_delivery", "order_paid"]
    await handle(placed(order_id))
    await handle(changed(OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED))
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(notifications.c.template, notifications.c.channel).where(notifications.c.order_id == order_id)
            )
        ).all()
        waiting = (await conn.execute(sa.select(deferred.c.template))).scalars().all()
    assert sorted((r.template, r.channel) for r in rows) == [
        ("order_delivered", "email"),
        ("order_out_for_delivery", "email"),
    ]
    assert waiting == []


async def test_a_release_brings_its_own_words_for_a_template_seeded_before(notifications_db: Database) -> None:
    db = notifications_db
    [paid] = [t for t in DEFAULT_TEMPLATES if (t.name, t.channel) == ("order_paid", "sms")]
    async with db.transaction() as conn:  # as an earlier release left it
        await conn.execute(
            templates.update()
            .where(templates.c.name == "order_paid", templates.c.channel == "sms")
            .values(body="Pizzeria: order $order_ref paid.")
        )
    async with db.transaction() as conn:  # this release starts
        await repository.seed_templates(conn, DEFAULT_TEMPLATES)
    async with db.read() as conn:
        found = await repository.all_templates(conn)
    assert found["order_paid"]["sms"].body == paid.body
    assert {(name, channel) for name, by in found.items() for channel in by} == {
        (t.name, t.channel) for t in DEFAULT_TEMPLATES
    }
