"""Delivery: the command it executes for the order saga, and the facts it reports."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

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


class GeoPoint(BaseModel):
    """A place on Earth (WGS 84 degrees)."""

    model_config = ConfigDict(frozen=True)

    lat: float
    lon: float


#: Where the pizzeria stands (the demo town's centre): where couriers leave from.
PIZZERIA = GeoPoint(lat=40.8518, lon=14.2681)


class DeliveryPickedUp(Message, context=CONTEXT, key="order_id"):
    """The courier left with the order (for `destination`, its address's place)."""

    order_id: UUID
    delivery_id: UUID
    courier_id: UUID
    at: datetime
    #: Whose order it is (None: a producer from before the field).
    customer_id: str | None = None
    #: Where the address is (None: a producer from before the field).
    destination: GeoPoint | None = None


class DeliveryCompleted(Message, context=CONTEXT, key="order_id"):
    """The customer has the order."""

    order_id: UUID
    delivery_id: UUID
    courier_id: UUID
    at: datetime
