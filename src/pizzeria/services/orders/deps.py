"""What orders' routes are handed: the parts its composition root built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pizzeria.chassis.deps import parts_dependency
from pizzeria.kit.cache import Cache
from pizzeria.messaging.saga import SagaEngine
from pizzeria.services.orders.handlers import Placer
from pizzeria.services.orders.projection import ProjectionManager
from pizzeria.services.orders.saga import OrderSagaData
from pizzeria.services.orders.watch import OrderWatch


@dataclass(frozen=True)
class OrdersParts:
    """Orders besides its runtime: the placer that places orders in sets (within the limits of
    what one customer may order), the saga engine that cancels, the read model's projections,
    the cache of order views, and the watch that wakes live order streams."""

    placer: Placer
    saga: SagaEngine[OrderSagaData]
    projections: ProjectionManager
    cache: Cache
    watch: OrderWatch


OrdersDep = Annotated[OrdersParts, parts_dependency(OrdersParts)]
