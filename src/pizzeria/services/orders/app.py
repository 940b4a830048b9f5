"""Orders composition root: the API, the order saga (engine, timer, replies), the menu copy and
the read model's projector."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.cache import build_cache
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.saga import SagaEngine, SagaTimer
from pizzeria.messaging.service import build_service_app
from pizzeria.services.orders import ops
from pizzeria.services.orders.api import router
from pizzeria.services.orders.handlers import build_handlers, on_saga_transition
from pizzeria.services.orders.projection import BASE_GROUP, ProjectionManager
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.tables import metadata
from pizzeria.services.orders.watch import OrderWatch

NAME = "orders"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = SagaEngine(place_order_saga(settings), listener=on_saga_transition)
    parts: dict[str, ProjectionManager] = {}
    watch = OrderWatch()
    cache = build_cache("orders", redis_url=settings.redis_url, ttl_s=settings.cache_ttl_s,
                        tombstone_s=settings.cache_tombstone_s, key_prefix=settings.redis_key_prefix)

    async def close(_: MessagingRuntime) -> None:
        await cache.close()

    def configure(runtime: MessagingRuntime) -> None:
        runtime.subscribe(NAME, build_handlers(engine), topics=CONSUMER_GROUPS[NAME])
        runtime.add_worker(SagaTimer(engine, runtime.db, runtime.uow).run, "saga-timer")
        manager = ProjectionManager(runtime, CONSUMER_GROUPS[BASE_GROUP], cache, watch.changed)
        runtime.add_worker(manager.run, "projections")
        parts["projections"] = manager

    app = build_service_app(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        routers=[router, ops.router],
        configure=configure,
        on_stop=close,
        description="Orders: placement, the order saga, cancellation, and the order read model.",
    )
    app.state.saga_engine = engine
    app.state.projections = parts["projections"]
    app.state.order_cache = cache
    app.state.order_watch = watch
    return app
