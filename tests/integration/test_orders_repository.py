"""Storing orders through the unit of work, on SQLite and PostgreSQL: the writes are staged and
made at commit, one statement per table, whatever order the transaction changed the orders in."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.saga import SagaEngine
from pizzeria.services.orders import handlers, repository
from pizzeria.services.orders.domain import Line, Order, PaymentStatus, Status
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import metadata, order_history
from tests.support.participant import Participant


def new_order(customer: str) -> Order:
    return Order.place(
        id=uuid7(),
        customer_id=customer,
        lines=[Line(uuid.uuid4(), "Margherita", "medium", 1, 1000)],
        currency="EUR",
        payment_token="tok_visa",
        delivery_address="1 Main St",
        email=None,
        phone=None,
        at=utcnow(),
    )


async def test_an_order_added_and_changed_after_another_was_changed_is_stored_in_its_last_state(db: Database) -> None:
    """The transaction stages an update (of an order it loaded) before it adds an order, then
    changes the new one: the new order is inserted in its last state, with its whole history,
    not updated before its row exists."""
    engine = SagaEngine(place_order_saga(OrdersSettings()), listener=handlers.on_saga_transition)
    shop = await Participant.create(db, metadata, handlers.build_handlers(engine), service="orders")
    earlier = new_order("alice")
    async with shop.runtime.uow() as uow:
        repository.add(uow, earlier)
        await uow.commit()

    added = new_order("bob")
    async with shop.runtime.uow() as uow:
        await handlers.record_payment(uow, earlier.id, PaymentStatus.PROCESSING, None)  # an update staged first
        repository.add(uow, added)
        assert await handlers.move(uow, added.id, Status.PAID)
        await uow.commit()

    async with db.read() as conn:
        stored = await repository.get(conn, added.id)
        assert stored is not None
        assert (stored.status, [status for status, _ in stored.history]) == (Status.PAID, [Status.PENDING, Status.PAID])
        loaded = await repository.get(conn, earlier.id)
        assert loaded is not None
        assert (loaded.payment_status, loaded.version) == (PaymentStatus.PROCESSING, earlier.version + 1)


async def test_an_order_moved_on_without_its_lines_and_history_keeps_them_whole(db: Database) -> None:
    """The saga's replies load orders without their lines and past history (`load_many`): what
    they append follows what was stored, in order, and the lines and the total stay as placed."""
    engine = SagaEngine(place_order_saga(OrdersSettings()), listener=handlers.on_saga_transition)
    shop = await Participant.create(db, metadata, handlers.build_handlers(engine), service="orders")
    order = new_order("carol")
    order.lines.append(Line(uuid.uuid4(), "Diavola", "large", 2, 1450))
    order.total = sum(line.total for line in order.lines)
    async with shop.runtime.uow() as uow:
        repository.add(uow, order)
        await uow.commit()

    for status in (Status.PAID, Status.PREPARING, Status.BAKING):  # one transaction each
        async with shop.runtime.uow() as uow:
            await repository.load_many(uow, [order.id])
            loaded = await repository.load(uow, order.id)
            assert loaded is not None
            assert loaded.partial
            assert (loaded.lines, loaded.history, loaded.total) == ([], [], 3900)
            assert await handlers.move(uow, order.id, status)
            await uow.commit()
    async with shop.runtime.uow() as uow:  # two moves in one transaction
        await repository.load_many(uow, [order.id])
        assert await handlers.move(uow, order.id, Status.READY)
        assert await handlers.move(uow, order.id, Status.OUT_FOR_DELIVERY)
        await uow.commit()

    async with db.read() as conn:
        stored = await repository.get(conn, order.id)
    assert stored is not None
    assert not stored.partial
    assert [status for status, _ in stored.history] == [
        Status.PENDING,
        Status.PAID,
        Status.PREPARING,
        Status.BAKING,
        Status.READY,
        Status.OUT_FOR_DELIVERY,
    ]
    assert [at for _, at in stored.history] == sorted(at for _, at in stored.history)
    assert (stored.lines, stored.total, stored.status) == (order.lines, 3900, Status.OUT_FOR_DELIVERY)


async def test_an_order_whose_history_has_a_gap_is_moved_on_after_its_last_entry(db: Database) -> None:
    """A history with a gap (an entry deleted by hand): whether the order is loaded whole or
    to be moved on, a new entry follows the last one stored, and nothing collides."""
    engine = SagaEngine(place_order_saga(OrdersSettings()), listener=handlers.on_saga_transition)
    shop = await Participant.create(db, metadata, handlers.build_handlers(engine), service="orders")
    order = new_order("dave")
    async with shop.runtime.uow() as uow:
        repository.add(uow, order)
        assert await handlers.move(uow, order.id, Status.PAID)
        assert await handlers.move(uow, order.id, Status.PREPARING)
        await uow.commit()
    async with db.transaction() as conn:  # seq 0, 2 are left
        await conn.execute(order_history.delete().where(order_history.c.order_id == order.id, order_history.c.seq == 1))

    async with shop.runtime.uow() as uow:  # loaded whole
        assert await handlers.move(uow, order.id, Status.BAKING)
        await uow.commit()
    async with shop.runtime.uow() as uow:  # loaded to be moved on
        await repository.load_many(uow, [order.id])
        assert await handlers.move(uow, order.id, Status.READY)
        await uow.commit()

    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(order_history.c.seq, order_history.c.status)
                .where(order_history.c.order_id == order.id)
                .order_by(order_history.c.seq)
            )
        ).all()
    assert [(r.seq, r.status) for r in rows] == [(0, "pending"), (2, "preparing"), (3, "baking"), (4, "ready")]
