"""Orders use cases, the order saga's replies, and the facts that move an order along."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from pizzeria.contracts.catalog import MenuItemCreated, MenuItemRemoved, MenuItemUpdated
from pizzeria.contracts.delivery import DeliveryCompleted, DeliveryPickedUp
from pizzeria.contracts.kitchen import (
    IngredientsReleased,
    IngredientsReserved,
    IngredientsUnavailable,
    KitchenLine,
    TicketBaking,
    TicketCancelled,
    TicketCancelRefused,
    TicketReady,
    TicketStarted,
)
from pizzeria.contracts.payments import PaymentCompleted, PaymentFailed, PaymentRefunded, PaymentVoided
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.errors import Conflict, NotFound, ValidationFailed
from pizzeria.kit.ids import uuid7
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.saga import Change, Saga, SagaEngine, Transition
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.orders import metrics, repository
from pizzeria.services.orders.domain import (
    CEILINGS,
    MenuEntry,
    Order,
    OrderLimits,
    PaymentStatus,
    RequestedLine,
    Status,
    price_lines,
)
from pizzeria.services.orders.saga import STATUS_AFTER_STEP, OrderSagaData

log = get_logger(__name__)

#: The order saga's engine, as the handlers use it.
OrderSaga = SagaEngine[OrderSagaData]


class IdempotencyKeyReused(ValidationFailed):
    """The Idempotency-Key was used before with a different request body."""

    type_slug = "idempotency-key-reused"
    title = "Idempotency key reused"


class TooManyUnpaidOrders(Conflict):
    """The customer has as many orders waiting for payment as one may have."""

    type_slug = "too-many-unpaid-orders"
    title = "Too many unpaid orders"


class TooLateToCancel(Conflict):
    type_slug = "too-late-to-cancel"
    title = "Too late to cancel"


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: str
    idempotency_key: str
    request_hash: str
    lines: list[RequestedLine]
    payment_token: str
    delivery_address: str
    email: str | None
    phone: str | None


def saga_data(order: Order) -> OrderSagaData:
    """What the saga's commands are built from (stored with the saga)."""
    return OrderSagaData(
        order_id=order.id,
        customer_id=order.customer_id,
        amount=order.total,
        currency=order.currency,
        token=order.payment_token,
        address=order.delivery_address,
        lines=[
            KitchenLine(menu_item_id=ln.menu_item_id, name=ln.name, size=ln.size, quantity=ln.quantity)
            for ln in order.lines
        ],
    )


async def place_order(
    cmd: PlaceOrder, uow: UnitOfWork, engine: OrderSaga, limits: OrderLimits = CEILINGS
) -> tuple[Order, bool]:
    """Price and record the order, its idempotency key, `OrderPlaced` and the start of its saga
    (whose first command goes out through the outbox), in one transaction. Returns the order
    and whether it is a replay of an earlier request with the same key. An order over the size
    limits is refused (422), and so is a new one while the customer has `max_unpaid` orders
    waiting for payment (409)."""
    async with uow:
        seen = await repository.find_key(uow.conn, cmd.customer_id, cmd.idempotency_key)
        if seen is not None:
            request_hash, order_id = seen
            if request_hash != cmd.request_hash:
                raise IdempotencyKeyReused("this Idempotency-Key was already used for a different order; use a new key")
            existing = await repository.get(uow.conn, order_id)
            if existing is None:  # pragma: no cover - written in the same transaction as the key
                raise NotFound(f"order {order_id} does not exist")
            return existing, True
        menu = await repository.menu_entries(uow.conn, [ln.menu_item_id for ln in cmd.lines])
        lines, currency = price_lines(cmd.lines, menu, limits)
        if limits.max_unpaid is not None:
            await _within_unpaid_limit(uow, cmd.customer_id, limits.max_unpaid)
        now = utcnow()
        order = Order.place(
            id=uuid7(),
            customer_id=cmd.customer_id,
            lines=lines,
            currency=currency,
            payment_token=cmd.payment_token,
            delivery_address=cmd.delivery_address,
            email=cmd.email,
            phone=cmd.phone,
            at=now,
        )
        await repository.add(uow, order)
        await repository.add_key(uow.conn, cmd.customer_id, cmd.idempotency_key, cmd.request_hash, order.id, now)
        await engine.start(uow, str(order.id), saga_data(order))
        uow.after_commit(metrics.orders_placed.inc)
        await uow.commit()
    return order, False


async def _within_unpaid_limit(uow: UnitOfWork, customer_id: str, limit: int) -> None:
    """Refuse a new order while the customer has `limit` unpaid ones. The customer's placements
    take turns from here to the commit, so concurrent ones cannot all slip under the limit."""
    await repository.lock_customer(uow.conn, customer_id)
    unpaid = await repository.count_unpaid(uow.conn, customer_id)
    if unpaid >= limit:
        raise TooManyUnpaidOrders(
            f"{unpaid} of your orders are waiting for payment, and {limit} may; "
            "place this one once they are paid or cancelled"
        )


async def cancel_order(order_id: UUID, customer_id: str | None, uow: UnitOfWork, engine: OrderSaga) -> Order:
    """The customer cancels: possible until cooking starts. The saga then undoes what was done
    (refund, release) and the order ends `cancelled` (reason customer_cancelled)."""
    async with uow:
        order = await repository.load(uow, order_id)
        if order is None or (customer_id is not None and order.customer_id != customer_id):
            raise NotFound(f"order {order_id} does not exist")
        try:
            if not order.request_cancel(at=utcnow()):
                return order  # asked twice: same answer
        except Conflict as exc:
            raise TooLateToCancel(str(exc)) from None
        if await engine.abort(uow, str(order_id), "customer_cancelled") is None:
            raise TooLateToCancel(f"order {order_id} can no longer be cancelled")
        repository.save(uow, order)
        await uow.commit()
    return order


async def move(uow: UnitOfWork, order_id: UUID, status: Status, *, reason: str | None = None) -> bool:
    """Move an order on, if it may go there (a fact that arrives when the order is already past
    it, or cancelled, changes nothing)."""
    order = await repository.load(uow, order_id)
    if order is None:
        return False
    if not order.can_move_to(status):
        if order.status is not status:
            log.info("status change not applicable", order_id=str(order_id), current=order.status, wanted=status)
        return False
    change = order.move_to(status, at=utcnow(), reason=reason)
    repository.save(uow, order)
    since_placed = change.at - as_utc(order.created_at)
    uow.after_commit(lambda: metrics.status_reached(status, reason, since_placed))
    return True


async def on_saga_transition(uow: UnitOfWork, saga: Saga, transition: Transition) -> None:
    """The saga moved: move the order with it (same transaction)."""
    order_id = UUID(saga.id)
    if transition.change is Change.STEP_SUCCEEDED and transition.step in STATUS_AFTER_STEP:
        await move(uow, order_id, STATUS_AFTER_STEP[transition.step])
    elif transition.change is Change.COMPENSATED:
        await move(uow, order_id, Status.CANCELLED, reason=transition.reason)
    elif transition.change is Change.RESUMED and transition.reason == "customer_cancelled":
        order = await repository.load(uow, order_id)
        if order is not None:
            order.cancel_refused(at=utcnow())
            repository.save(uow, order)


async def record_payment(uow: UnitOfWork, order_id: UUID, status: PaymentStatus, payment_id: UUID | None) -> None:
    """Follow the payment's own status (a fact arriving late, or again, changes nothing)."""
    order = await repository.load(uow, order_id)
    if order is not None and order.record_payment(status, payment_id, at=utcnow()):
        repository.save(uow, order)


# -- consumed events ----------------------------------------------------------------------------

SAGA_REPLIES: tuple[type[Message], ...] = (
    IngredientsReserved,
    IngredientsUnavailable,
    IngredientsReleased,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
    TicketStarted,
    TicketCancelled,
    TicketCancelRefused,
    TicketReady,
    DeliveryCompleted,
)
PAYMENT_STATUS: dict[type[Message], PaymentStatus] = {
    PaymentCompleted: PaymentStatus.COMPLETED,
    PaymentFailed: PaymentStatus.FAILED,
    PaymentRefunded: PaymentStatus.REFUNDED,
    PaymentVoided: PaymentStatus.FAILED,
}
FACTS: dict[type[Message], Status] = {TicketBaking: Status.BAKING, DeliveryPickedUp: Status.OUT_FOR_DELIVERY}


def build_handlers(engine: OrderSaga) -> HandlerRegistry:
    """What the orders consumer group handles: the menu copy, the saga's replies, and facts."""
    registry = HandlerRegistry()

    @registry.on(MenuItemCreated)
    @registry.on(MenuItemUpdated)
    async def on_menu_item(event: MenuItemCreated, _: Envelope, uow: UnitOfWork) -> None:
        entry = MenuEntry(
            id=event.menu_item_id,
            name=event.name,
            currency=event.currency,
            prices={s.size: s.price for s in event.sizes},
            available=event.available,
            version=event.version,
        )
        await repository.apply_menu_entry(uow.conn, entry)

    @registry.on(MenuItemRemoved)
    async def on_menu_item_removed(event: MenuItemRemoved, _: Envelope, uow: UnitOfWork) -> None:
        await repository.remove_menu_entry(uow.conn, event.menu_item_id, event.version)

    @registry.on_batch(*SAGA_REPLIES, *FACTS)
    async def on_replies_and_facts(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of saga replies and facts: every order and saga they concern is loaded at once,
        each message then moves them in memory, and the writes are made once at commit."""
        order_ids = {item.message.order_id for item in items}
        await repository.load_many(uow, order_ids)
        await engine.load_many(uow, [str(i) for i in order_ids])
        for item in items:
            with item.handling():
                await on_one(item.message, item.envelope, uow)

    async def on_one(event: Message, env: Envelope, uow: UnitOfWork) -> None:
        order_id: UUID = event.order_id  # type: ignore[attr-defined]
        fact = FACTS.get(type(event))
        if fact is not None:
            await move(uow, order_id, fact)
            return
        status = PAYMENT_STATUS.get(type(event))
        if status is not None:
            await record_payment(uow, order_id, status, getattr(event, "payment_id", None))
        await engine.on_reply(uow, str(order_id), event, env.id)

    return registry
