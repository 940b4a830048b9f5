"""Delivery: the command it executes for the order saga, and the facts it reports."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "delivery"


class ScheduleDelivery(Message, context=CONTEXT, kind="command", key="order_id"):
    """The order is ready: bring it to the customer (idempotent per order)."""

    order_id: UUID
    customer_id: str
    address: str


class DeliveryScheduled(Message, context=CONTEXT, key="order_id"):
    order_id: UUID
    delivery_id: UUID


class CourierAssigned(Message, context=CONTEXT, key="order_id"):
    order_id: UUID
    delivery_id: UUID
    courier_id: UUID
    courier_name: str


class DeliveryPickedUp(Message, context=CONTEXT, key="order_id"):
    """The courier left with the order."""

    order_id: UUID
    delivery_id: UUID
    courier_id: UUID
    at: datetime


class DeliveryCompleted(Message, context=CONTEXT, key="order_id"):
    """The customer has the order."""

    order_id: UUID
    delivery_id: UUID
    courier_id: UUID
    at: datetime
