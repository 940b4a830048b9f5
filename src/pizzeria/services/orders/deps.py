"""What orders' routes are handed: the parts its composition root built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency
from pizzeria.kit.cache import Cache
from pizzeria.messaging.saga import SagaEngine
from pizzeria.services.orders.domain import OrderLimits
from pizzeria.services.orders.projection import ProjectionManager
from pizzeria.services.orders.saga import OrderSagaData
from pizzeria.services.orders.watch import OrderWatch


@dataclass(frozen=True)
class OrdersParts:
    """Orders besides its runtime: the saga engine that places and cancels, the read model's
    projections, the cache of order views, the watch that wakes live order streams, and the
    limits of what one customer may order."""

    saga: SagaEngine[OrderSagaData]
    projections: ProjectionManager
    cache: Cache
    watch: OrderWatch
    limits: OrderLimits


OrdersDep = Annotated[OrdersParts, parts_dependency(OrdersParts)]
