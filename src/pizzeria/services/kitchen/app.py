"""Kitchen composition root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.kitchen import handlers
from pizzeria.services.kitchen.api import router
from pizzeria.services.kitchen.autopilot import KitchenAutopilot
from pizzeria.services.kitchen.tables import metadata

NAME = "kitchen"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def configure(runtime: MessagingRuntime) -> None:
        wake = lambda: None  # noqa: E731  (replaced when the autopilot runs)
        if settings.kitchen_autopilot:
            autopilot = KitchenAutopilot(runtime, stage=timedelta(milliseconds=settings.kitchen_stage_ms))
            runtime.add_worker(autopilot.run, "kitchen-autopilot")
            wake = autopilot.wake
        runtime.subscribe(NAME, handlers.build_handlers(wake), topics=CONSUMER_GROUPS[NAME])

    async def seed(runtime: MessagingRuntime) -> None:
        await handlers.seed_opening_stock(runtime.uow())

    return build_service_app(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        routers=[router],
        configure=configure,
        on_start=seed,
        description="Kitchen: stock, reservations, recipes and tickets.",
    )
