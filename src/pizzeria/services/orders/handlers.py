"""Orders use cases, the order saga's replies, and the facts that move an order along."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
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
from pizzeria.kit import failpoints
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.errors import Conflict, NotFound, ProblemError, ValidationFailed
from pizzeria.kit.groupcommit import GroupCommit, Member
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


#: Passed by every set of placements (and every placement alone) just before its commit.
BEFORE_COMMIT = "orders.place.before_commit"

#: A placement's answer: the order, and whether it is a replay of an earlier request.
Placed = tuple[Order, bool]


class Placer:
    """Places the orders that come in together in one transaction (a group commit: one begin,
    one read of the keys, the menu and the unpaid counts, one insert per table, one commit).
    Each caller gets what it would have got alone: its order, or its own refusal."""

    def __init__(self, uow: Callable[[], UnitOfWork], engine: OrderSaga, limits: OrderLimits = CEILINGS) -> None:
        self._uow = uow
        self._engine = engine
        self._limits = limits
        self._sets = GroupCommit(self._place_set, self._place_alone, name="orders.place")

    async def place(self, cmd: PlaceOrder) -> Placed:
        """`place_order`, with whatever other placements come in meanwhile."""
        return await self._sets.submit(cmd)

    async def close(self) -> None:
        """Stop placing (the service stops): a set being placed rolls back, and whoever still
        waits gets `CancelledError` (a request cut short; its client may retry with its key)."""
        await self._sets.close()

    async def _place_set(self, placements: Sequence[Member[PlaceOrder]]) -> list[Placed | ProblemError]:
        return await place_orders(placements, self._uow(), self._engine, self._limits)

    async def _place_alone(self, cmd: PlaceOrder) -> Placed:
        return await place_order(cmd, self._uow(), self._engine, self._limits)


async def place_order(cmd: PlaceOrder, uow: UnitOfWork, engine: OrderSaga, limits: OrderLimits = CEILINGS) -> Placed:
    """Place one order alone (`place_orders` with a set of one): the order and whether it is a
    replay; raises its refusal."""
    [answer] = await place_orders([Member(cmd)], uow, engine, limits)
    if isinstance(answer, ProblemError):
        raise answer
    return answer


async def place_orders(
    placements: Sequence[Member[PlaceOrder]], uow: UnitOfWork, engine: OrderSaga, limits: OrderLimits = CEILINGS
) -> list[Placed | ProblemError]:
    """Price and record a set of orders in one transaction: each with its idempotency key,
    `OrderPlaced` and the start of its saga (whose first command goes out through the outbox),
    emitted in its caller's context. Answers each placement, in order: its order and whether it
    is a replay of an earlier request with the same key (earlier in the set, too), or its own
    refusal, which writes nothing of it and holds up none of the others: an order over the
    size limits (422), a key used before with a different request (422), or a new order while
    the customer has `max_unpaid` orders waiting for payment, counting those placed before it
    in the set (409)."""
    async with uow:
        conn = uow.conn
        item_ids = [ln.menu_item_id for p in placements for ln in p.item.lines]
        if limits.max_unpaid is not None:
            # The customers' placements take turns from here to the commit (in one order of
            # customers), so concurrent sets cannot all slip under the limit. Taken before the
            # keys are read: a key is written only under its customer's lock, so the keys read
            # next are all that were committed, and a retry racing its first try (on another
            # replica) is answered with that order, not counted as a new one over the limit.
            # Every customer of the set is locked, a replay's too: which are replays is not
            # known yet. (Without a limit nothing is locked: a set racing its key's first try
            # waits on the key's unique entry, fails, and is placed again alone, finding it.)
            # The menu comes back with the locks (one round trip): it needs none.
            customers = [p.item.customer_id for p in placements]
            menu = await repository.lock_customers_and_read_menu(conn, customers, item_ids)
        else:
            menu = await repository.menu_entries(conn, item_ids)
        # The customers' unpaid orders are counted with the keys (a replay's customer's too:
        # which are replays is not known before), in one round trip.
        known, unpaid = await repository.find_keys(
            conn,
            [(p.item.customer_id, p.item.idempotency_key) for p in placements],
            count_unpaid=limits.max_unpaid is not None,
        )
        replayed = await repository.get_many(conn, [order_id for _, order_id in known.values()])
        now = utcnow()
        placed: dict[tuple[str, str], tuple[str, Order]] = {}  # by key: the request, the order
        answers: list[Placed | ProblemError] = []
        for placement in placements:
            cmd = placement.item
            key = (cmd.customer_id, cmd.idempotency_key)
            try:
                if key in known:
                    request_hash, order_id = known[key]
                    answers.append(_replay(cmd, request_hash, replayed.get(order_id)))
                elif key in placed:
                    answers.append(_replay(cmd, *placed[key]))
                else:
                    lines, currency = price_lines(cmd.lines, menu, limits)
                    if limits.max_unpaid is not None:
                        _within_unpaid_limit(unpaid[cmd.customer_id], limits.max_unpaid)
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
                    placement.run(_record, uow, engine, cmd, order)
                    if limits.max_unpaid is not None:
                        unpaid[cmd.customer_id] += 1
                    placed[key] = (cmd.request_hash, order)
                    answers.append((order, False))
            except ProblemError as refused:  # raised before anything of it was recorded
                answers.append(refused)
        if placed:
            failpoints.hit(BEFORE_COMMIT)
            uow.after_commit(partial(metrics.orders_placed.inc, len(placed)))
            await uow.commit()
    return answers


def _record(uow: UnitOfWork, engine: OrderSaga, cmd: PlaceOrder, order: Order) -> None:
    """A new order's rows, key and saga, written at commit; its events and its saga's first
    command emitted now (in the current context: its caller's)."""
    repository.add(uow, order)
    repository.add_key(uow, cmd.customer_id, cmd.idempotency_key, cmd.request_hash, order.id, order.created_at)
    engine.start(uow, str(order.id), saga_data(order))


def _replay(cmd: PlaceOrder, request_hash: str, order: Order | None) -> Placed:
    if request_hash != cmd.request_hash:
        raise IdempotencyKeyReused("this Idempotency-Key was already used for a different order; use a new key")
    if order is None:  # pragma: no cover - written in the same transaction as the key
        raise NotFound("the order of this Idempotency-Key does not exist")
    return order, True


def _within_unpaid_limit(unpaid: int, limit: int) -> None:
    """Refuse a new order while the customer has `limit` unpaid ones."""
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
