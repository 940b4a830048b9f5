"""Kitchen composition root: stock, reservations and tickets; the autopilot when it is on."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.kitchen import handlers
from pizzeria.services.kitchen.api import router
from pizzeria.services.kitchen.autopilot import KitchenAutopilot
from pizzeria.services.kitchen.settings import KitchenSettings
from pizzeria.services.kitchen.tables import MIGRATIONS

NAME = "kitchen"
#: the group that keeps the kitchen's copy of the recipes
MENU = "kitchen-menu"


def create_app(settings: Settings | None = None, own: KitchenSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or KitchenSettings()
    runtime = open_runtime(NAME, settings)
    wake_autopilot = None
    if own.autopilot:
        autopilot = KitchenAutopilot(runtime, stage=timedelta(milliseconds=own.stage_ms))
        wake_autopilot = runtime.add_loop("kitchen-autopilot", autopilot.step, interval=1.0).wake
    runtime.subscribe(NAME, handlers.build_handlers(wake_autopilot), topics=CONSUMER_GROUPS[NAME])
    runtime.subscribe(MENU, handlers.build_menu_handlers(), topics=CONSUMER_GROUPS[MENU])

    async def seed() -> None:
        await handlers.seed_opening_stock(runtime.uow())

    return service_app(
        runtime,
        None,
        migrations=MIGRATIONS,
        routers=[router],
        on_start=seed,
        description="Kitchen: stock, reservations, recipes and tickets.",
    )
