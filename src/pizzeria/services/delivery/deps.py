"""What delivery's routes are handed: the parts its composition root built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency


@dataclass(frozen=True)
class DeliveryParts:
    """Delivery besides its runtime: a way to wake the courier dispatcher (a courier came free)."""

    wake_dispatcher: Callable[[], None]


DeliveryDep = Annotated[DeliveryParts, parts_dependency(DeliveryParts)]
