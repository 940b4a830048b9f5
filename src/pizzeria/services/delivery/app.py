"""Delivery composition root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.delivery import handlers
from pizzeria.services.delivery.api import router
from pizzeria.services.delivery.autopilot import Dispatcher
from pizzeria.services.delivery.tables import metadata

NAME = "delivery"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    holder: dict[str, Dispatcher] = {}

    def configure(runtime: MessagingRuntime) -> None:
        dispatcher = Dispatcher(runtime, drive=settings.delivery_autopilot,
                                stage=timedelta(milliseconds=settings.delivery_stage_ms))
        holder["dispatcher"] = dispatcher
        runtime.add_worker(dispatcher.run, "delivery-dispatcher")
        runtime.subscribe(NAME, handlers.build_handlers(dispatcher.wake), topics=CONSUMER_GROUPS[NAME])

    async def seed(runtime: MessagingRuntime) -> None:
        await handlers.seed_couriers(runtime.uow())

    app = build_service_app(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        routers=[router],
        configure=configure,
        on_start=seed,
        description="Delivery: couriers and deliveries.",
    )
    app.state.dispatcher = holder["dispatcher"]
    return app
