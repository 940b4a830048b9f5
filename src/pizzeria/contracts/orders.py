"""Orders facts: an order was placed, and every change of its status after that."""

from __future__ import annotations

import enum
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
