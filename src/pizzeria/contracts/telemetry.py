"""Telemetry: what the devices' readings mean for the rest of the system.

Readings themselves never travel on the bus (thousands a second, each worth little alone);
telemetry turns them into the few facts others act on: an oven out of its temperature range
(once per excursion, and once more when it is back), a courier near the customer's address
(once per delivery), a delivery's estimated arrival that moved, and that a device was heard
from (at most once per device every `TELEMETRY_SEEN_EVERY_S`, so devices keeps its presence
without a message per reading).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "telemetry"


class DeviceSeen(Message, context=CONTEXT, key="device_id"):
    """Readings came from the device (`at`: when telemetry received the latest of them)."""

    device_id: UUID
    at: datetime


class OvenTemperatureAlarm(Message, context=CONTEXT, key="device_id"):
    """An oven that had reached its range left it (`high`: hotter than `high_c`, `low`: colder
    than `low_c`). One per excursion, however many readings it lasts."""

    device_id: UUID
    station: str | None
    direction: Literal["high", "low"]
    temperature_c: float
    low_c: float
    high_c: float
    #: The device's time of the reading that left the range.
    at: datetime


class OvenTemperatureRecovered(Message, context=CONTEXT, key="device_id"):
    """The oven is back within its range: the excursion an alarm announced is over."""

    device_id: UUID
    station: str | None
    temperature_c: float
    at: datetime


class CourierArriving(Message, context=CONTEXT, key="order_id"):
    """The courier carrying the order came within `TELEMETRY_ARRIVING_DISTANCE_M` of its
    address: about `eta_s` seconds away. Once per delivery."""

    order_id: UUID
    delivery_id: UUID
    customer_id: str
    courier_id: str
    distance_m: float
    eta_s: int
    at: datetime


class DeliveryEtaChanged(Message, context=CONTEXT, key="order_id"):
    """The estimated arrival of an order out for delivery (from the courier's distance and
    speed) moved by `TELEMETRY_ETA_CHANGE_S` or more since it was last announced (the first
    estimate is announced too)."""

    order_id: UUID
    delivery_id: UUID
    courier_id: str
    eta_s: int
    distance_m: float
    at: datetime
