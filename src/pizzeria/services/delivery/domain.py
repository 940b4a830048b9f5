"""A delivery's life. No I/O."""

from __future__ import annotations

import enum

from pizzeria.kit.errors import Conflict


class DeliveryStatus(enum.StrEnum):
    WAITING = "waiting"
    ASSIGNED = "assigned"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"


NEXT = {
    DeliveryStatus.ASSIGNED: DeliveryStatus.OUT_FOR_DELIVERY,
    DeliveryStatus.OUT_FOR_DELIVERY: DeliveryStatus.DELIVERED,
}


def next_status(status: DeliveryStatus) -> DeliveryStatus:
    """What a courier's action moves the delivery to."""
    if status is DeliveryStatus.WAITING:
        raise Conflict("no courier has this delivery yet")
    if status not in NEXT:
        raise Conflict(f"a {status} delivery cannot move on")
    return NEXT[status]


DEMO_COURIERS = ("Ana", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana")
