"""Storing orders through the unit of work, on SQLite and PostgreSQL: the writes are staged and
made at commit, one statement per table, whatever order the transaction changed the orders in."""

from __future__ import annotations

import uuid

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.saga import SagaEngine
from pizzeria.services.orders import handlers, repository
from pizzeria.services.orders.domain import Line, Order, PaymentStatus, Status
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import metadata
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
