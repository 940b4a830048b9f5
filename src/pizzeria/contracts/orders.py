"""Orders facts: an order was placed, and every change of its status after that."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from pizzeria.messaging.message import Message

CONTEXT = "orders"


class OrderStatus(enum.StrEnum):
    """Where an order stands (the orders context moves it; everyone else reads it)."""

    PENDING = "pending"
    PAID = "paid"
    PREPARING = "preparing"
    BAKING = "baking"
    READY = "ready"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


#: The order's state machine, part of the contract: status → the statuses it may move to (every
#: `OrderStatusChanged` is one of these moves; a reader may hold a history against it).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.PREPARING, OrderStatus.CANCELLED}),
    OrderStatus.PREPARING: frozenset({OrderStatus.BAKING}),
    OrderStatus.BAKING: frozenset({OrderStatus.READY}),
    OrderStatus.READY: frozenset({OrderStatus.OUT_FOR_DELIVERY}),
    OrderStatus.OUT_FOR_DELIVERY: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


def is_valid_path(statuses: Sequence[str]) -> bool:
    """True if `statuses` is a walk of the state machine starting at `pending`."""
    known = {s.value for s in OrderStatus}
    if not statuses or statuses[0] != OrderStatus.PENDING or not set(statuses) <= known:
        return False
    return all(OrderStatus(b) in TRANSITIONS[OrderStatus(a)] for a, b in itertools.pairwise(statuses))


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    menu_item_id: UUID
    name: str
    size: str
    quantity: int
    unit_price: int


class Contact(BaseModel):
    """How to reach the customer about this order (personal data: masked in logs)."""

    model_config = ConfigDict(frozen=True)

    email: str | None = None
    phone: str | None = None


class PaymentMethod(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str = "card"
    token: str


class OrderPlaced(Message, context=CONTEXT, key="order_id"):
    """A customer placed an order; it is `pending` until paid."""

    order_id: UUID
    customer_id: str
    items: list[OrderLine]
    total: int
    currency: str
    payment_method: PaymentMethod
    delivery_address: str
    contact: Contact
    placed_at: datetime


class OrderStatusChanged(Message, context=CONTEXT, key="order_id"):
    """An order moved to another status (`reason` says why when it was cancelled)."""

    order_id: UUID
    customer_id: str
    status: OrderStatus
    previous_status: OrderStatus
    reason: str | None = None
    at: datetime


class OrderCancellationRequested(Message, context=CONTEXT, key="order_id"):
    """The customer asked to cancel; the order is cancelled once compensation finishes, unless
    the kitchen started cooking first."""

    order_id: UUID
    customer_id: str
    at: datetime


class OrderCancellationRefused(Message, context=CONTEXT, key="order_id"):
    """Too late to cancel: the kitchen had started; the order goes on."""

    order_id: UUID
    customer_id: str
    at: datetime
