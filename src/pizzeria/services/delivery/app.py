"""Delivery composition root: couriers and deliveries, and the dispatcher that hands waiting
deliveries to free couriers (and drives them when the autopilot is on)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.delivery import handlers
from pizzeria.services.delivery.api import router
from pizzeria.services.delivery.autopilot import CourierDispatcher
from pizzeria.services.delivery.deps import DeliveryParts
from pizzeria.services.delivery.settings import DeliverySettings
from pizzeria.services.delivery.tables import MIGRATIONS

NAME = "delivery"


def create_app(settings: Settings | None = None, own: DeliverySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or DeliverySettings()
    runtime = open_runtime(NAME, settings)
    dispatcher = CourierDispatcher(runtime, drive=own.autopilot, stage=timedelta(milliseconds=own.stage_ms))
    dispatching = runtime.add_loop("delivery-dispatcher", dispatcher.step, interval=1.0)
    runtime.subscribe(NAME, handlers.build_handlers(dispatching.wake), topics=CONSUMER_GROUPS[NAME])

    async def seed() -> None:
        await handlers.seed_couriers(runtime.uow())

    return service_app(
        runtime,
        DeliveryParts(wake_dispatcher=dispatching.wake),
        migrations=MIGRATIONS,
        routers=[router],
        on_start=seed,
        description="Delivery: couriers and deliveries.",
    )
