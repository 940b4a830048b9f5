"""Catalog composition root."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.messaging.service import build_service_app
from pizzeria.services.catalog import handlers
from pizzeria.services.catalog.api import router
from pizzeria.services.catalog.tables import metadata

NAME = "catalog"
MIGRATIONS = MigrationSet(str(Path(__file__).parent / "migrations"), "alembic_version", metadata)


async def _seed(runtime: MessagingRuntime) -> None:
    await handlers.seed_demo_menu(runtime.uow())


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_service_app(
        name=NAME,
        settings=settings or get_settings(),
        migrations=MIGRATIONS,
        routers=[router],
        on_start=_seed,
        description="The menu: items, sizes, prices and recipes.",
    )
