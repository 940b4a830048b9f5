"""Orders composition root: the API, the order saga (engine, timer, replies), the menu copy and
the read model's projections."""

from __future__ import annotations

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.cache import build_cache
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.saga import SagaEngine, SagaTimer
from pizzeria.services.orders import ops
from pizzeria.services.orders.api import router
from pizzeria.services.orders.deps import OrdersParts
from pizzeria.services.orders.handlers import Placer, build_handlers, on_saga_transition
from pizzeria.services.orders.projection import BASE_GROUP, ProjectionManager
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import MIGRATIONS
from pizzeria.services.orders.watch import OrderWatch

NAME = "orders"


def create_app(settings: Settings | None = None, own: OrdersSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or OrdersSettings()
    runtime = open_runtime(NAME, settings, shared_state=True)
    saga = SagaEngine(place_order_saga(own), listener=on_saga_transition)
    cache = build_cache(
        "orders",
        redis_url=settings.redis_url,
        ttl_s=settings.cache_ttl_s,
        tombstone_s=settings.cache_tombstone_s,
        key_prefix=settings.redis_key_prefix,
    )
    watch = OrderWatch()
    placer = Placer(runtime.uow, saga, own.limits())
    projections = ProjectionManager(runtime, CONSUMER_GROUPS[BASE_GROUP], cache, watch.changed)

    runtime.subscribe(NAME, build_handlers(saga), topics=CONSUMER_GROUPS[NAME])
    timer = SagaTimer(saga, runtime.db, runtime.uow)
    runtime.add_loop("saga-timer", timer.tick, interval=timer.interval, initial_delay=timer.interval)
    runtime.add_worker(projections.run, "projections")

    async def stop() -> None:
        await placer.close()
        await cache.close()

    return service_app(
        runtime,
        OrdersParts(placer=placer, saga=saga, projections=projections, cache=cache, watch=watch),
        migrations=MIGRATIONS,
        routers=[router, ops.router],
        on_stop=stop,
        description="Orders: placement, the order saga, cancellation, and the order read model.",
    )
